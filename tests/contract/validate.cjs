// The contract checked by the real validators an integrator would use
// (tests/it/contract.rs runs it with NODE_PATH=.tools/contract/node_modules):
//
//   node validate.cjs versions
//       prints the validators' versions
//   node validate.cjs schemas DIR KIND=FILE...
//       compiles every DIR/*.schema.json with Ajv in strict mode (draft
//       2020-12, standard formats), then validates each message FILE against
//       DIR/KIND.schema.json
//   node validate.cjs asyncapi FILE
//       parses the AsyncAPI document with @asyncapi/parser (its own rules and
//       the JSON Schemas it references); any error fails
//
// Exit 0 when everything is valid; otherwise each problem on stderr, exit 1.
'use strict';
const fs = require('fs');
const path = require('path');

function versions() {
  const v = (p) => require(p + '/package.json').version;
  console.log(`ajv ${v('ajv')}, ajv-formats ${v('ajv-formats')}, @asyncapi/parser ${v('@asyncapi/parser')}, node ${process.version}`);
}

function schemas(dir, pairs) {
  const Ajv2020 = require('ajv/dist/2020').default;
  const addFormats = require('ajv-formats').default;
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  const compiled = {};
  let bad = 0;
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.schema.json')).sort()) {
    const kind = f.replace('.schema.json', '');
    try {
      compiled[kind] = ajv.compile(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
      console.log(`compiled ${f} (strict)`);
    } catch (e) {
      console.error(`${f}: ${e.message}`);
      bad++;
    }
  }
  for (const pair of pairs) {
    const [kind, file] = pair.split('=');
    const check = compiled[kind];
    if (!check) { console.error(`${file}: no schema ${kind}`); bad++; continue; }
    const msg = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (check(msg)) {
      console.log(`valid ${kind}: ${path.basename(file)}`);
    } else {
      console.error(`${file} (${kind}): ${ajv.errorsText(check.errors, { separator: '; ' })}`);
      bad++;
    }
  }
  return bad;
}

async function asyncapi(file) {
  const { Parser, fromFile } = require('@asyncapi/parser');
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, file).parse();
  let bad = 0;
  for (const d of diagnostics) {
    // 0 error, 1 warning, 2 info, 3 hint
    const where = (d.path || []).join('.');
    const line = `${['error', 'warning', 'info', 'hint'][d.severity] || d.severity} ${d.code} at ${where}: ${d.message}`;
    if (d.severity === 0) { console.error(line); bad++; } else { console.log(line); }
  }
  if (!document) { console.error(`${file}: not a valid AsyncAPI document`); return bad + 1; }
  console.log(`parsed ${path.basename(file)}: AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.messages().length} messages`);
  // The parser does not check examples against their payload schema: Ajv
  // (strict) does, on the schemas as the document resolves them.
  const Ajv2020 = require('ajv/dist/2020').default;
  const addFormats = require('ajv-formats').default;
  for (const m of document.messages().all()) {
    const examples = m.examples().all();
    if (!examples.length) continue;
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    addFormats(ajv);
    let schema = JSON.parse(JSON.stringify(m.payload().json()));
    if (schema && schema.schemaFormat && schema.schema) schema = schema.schema;
    // The parser's own annotations are not JSON Schema keywords.
    const strip = (v) => {
      if (Array.isArray(v)) v.forEach(strip);
      else if (v && typeof v === 'object') for (const k of Object.keys(v)) { if (k.startsWith('x-parser-')) delete v[k]; else strip(v[k]); }
    };
    strip(schema);
    let check;
    try { check = ajv.compile(schema); } catch (e) { console.error(`message ${m.id()}: schema: ${e.message}`); bad++; continue; }
    for (const ex of examples) {
      if (check(ex.payload())) console.log(`example ${m.id()}/${ex.name()} valid`);
      else { console.error(`example ${m.id()}/${ex.name()}: ${ajv.errorsText(check.errors, { separator: '; ' })}`); bad++; }
    }
  }
  return bad;
}

(async () => {
  const [cmd, ...args] = process.argv.slice(2);
  let bad = 0;
  if (cmd === 'versions') versions();
  else if (cmd === 'schemas') bad = schemas(args[0], args.slice(1));
  else if (cmd === 'asyncapi') bad = await asyncapi(args[0]);
  else { console.error('usage: validate.cjs versions | schemas DIR KIND=FILE... | asyncapi FILE'); process.exit(2); }
  process.exit(bad ? 1 : 0);
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
