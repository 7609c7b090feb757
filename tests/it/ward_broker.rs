//! The ward broker as shipped (deploy/mosquitto/ward-bridge.conf and its ACL
//! files) on the real mosquitto, bridged to a loopback central broker: who
//! may log in on which listener, and what reaches the agent and the IOC.

use crate::common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};

const SIGNAL: &str = "controllers/junction-12/north/signal";
const AGENT_TREE: &str = "ioc/v1/hn-hoankiem-hangbac";

/// One MQTT 3.1.1 client, connected (CONNACK accepted) or refused.
struct Mqtt {
    client: Client,
    events: mpsc::Receiver<Packet>,
}

impl Mqtt {
    fn connect(port: u16, id: &str, login: Option<(&str, &str)>) -> Result<Mqtt, String> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        let (client, mut conn) = Client::new(opts, 16);
        let (tx, events) = mpsc::channel();
        let (first_tx, first) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first_tx = Some(first_tx);
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        if let Some(t) = first_tx.take() {
                            let _ = t.send(Ok(a.code));
                        }
                    }
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(t) = first_tx.take() {
                            let _ = t.send(Err(e));
                        }
                        return;
                    }
                }
            }
        });
        match first.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(ConnectReturnCode::Success)) => Ok(Mqtt { client, events }),
            Ok(Ok(code)) => Err(format!("{code:?}")),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => Err(format!("{code:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no CONNACK within 10 s".into()),
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK (mosquitto acks
    /// what its ACL drops too, so this only says the broker has handled it).
    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .unwrap();
        self.wait(|p| matches!(p, Packet::PubAck(_)), "PUBACK");
    }

    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        self.wait(|p| matches!(p, Packet::SubAck(_)), "SUBACK");
    }

    fn wait(&self, mut f: impl FnMut(&Packet) -> bool, what: &str) -> Packet {
        loop {
            let p = self
                .events
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {what} within 10 s"));
            if f(&p) {
                return p;
            }
        }
    }
}

fn topics(sub: &Subscriber) -> Vec<(String, String)> {
    sub.all()
        .into_iter()
        .map(|m| (m.topic, String::from_utf8_lossy(&m.payload).into_owned()))
        .collect()
}

/// The shipped ward broker: a controller on the LAN listener publishes its
/// signal topic and nothing else; nobody gets in anonymously or on the
/// other listener; the agent's user publishes under ioc/v1/ and the bridge
/// forwards that (and only that) to the IOC.
#[test]
fn ward_broker_as_shipped_lets_controllers_publish_only_their_signals() {
    let central = Broker::start();
    let ward = WardBroker::start(&central);
    let at_central = Subscriber::start(&central, "#");
    let agents = ward.broker.port;
    let controllers = ward.controllers_port;

    // Any local process could publish under ioc/v1/, which the bridge sends
    // out under the ward's certificate.
    if Mqtt::connect(agents, "anonymous-local", None).is_ok() {
        panic!("an anonymous client got in on the agents' listener (127.0.0.1:1883)");
    }
    ward.assert_listeners();

    // Anonymous, a wrong password, and each user on the other listener: refused.
    let refused = [
        (agents, "anonymous", None),
        (controllers, "anonymous", None),
        (agents, "wrong password", Some((WARD_AGENT.0, "guess"))),
        (
            controllers,
            "wrong password",
            Some((WARD_CONTROLLER.0, "guess")),
        ),
        (agents, "the controller's login", Some(WARD_CONTROLLER)),
        (controllers, "the agent's login", Some(WARD_AGENT)),
    ];
    for (i, (port, what, login)) in refused.iter().enumerate() {
        let r = Mqtt::connect(*port, &format!("refused-{i}"), *login);
        let listener = if *port == agents {
            "agents'"
        } else {
            "controllers'"
        };
        match r {
            Ok(_) => panic!("{what} got in on the {listener} listener"),
            Err(code) => println!("{what} on the {listener} listener: refused ({code})"),
        }
    }

    // The agent: reads the signal topics and its own tree (as the agent does).
    let agent = Mqtt::connect(agents, "ioc-agent-hn-hoankiem-hangbac", Some(WARD_AGENT))
        .unwrap_or_else(|e| panic!("the agent's login refused: {e}\n{}", ward.broker.log()));
    let seen = Subscriber::start_login(agents, "#", WARD_AGENT);
    agent.subscribe("controllers/+/+/signal");

    // The controller publishes its signal: the agent and the reader get it.
    let ctl = Mqtt::connect(controllers, "junction-12-gw", Some(WARD_CONTROLLER))
        .unwrap_or_else(|e| panic!("the controller's login refused: {e}\n{}", ward.broker.log()));
    ctl.publish(SIGNAL, "red");
    let got = agent.wait(
        |p| matches!(p, Packet::Publish(_)),
        "the signal at the agent",
    );
    let Packet::Publish(p) = got else {
        unreachable!()
    };
    assert_eq!((p.topic.as_str(), &p.payload[..]), (SIGNAL, &b"red"[..]));

    // What it must not: the agents' tree, another junction's signal; then a
    // last allowed message, which arrives after them if they were delivered.
    let forged = [
        (format!("{AGENT_TREE}/events"), "forged alert"),
        (format!("{AGENT_TREE}/status"), "forged status"),
        ("ioc/v1/bridges/x/state".to_string(), "0"),
        ("controllers/junction-13/north/signal".to_string(), "green"),
    ];
    for (t, m) in &forged {
        ctl.publish(t, m);
    }
    ctl.publish(SIGNAL, "green");
    assert!(
        seen.wait_for(Duration::from_secs(10), |m| m.topic == SIGNAL
            && m.payload == b"green")
            .is_some(),
        "the controller's second state did not arrive"
    );

    // The agent's user publishes under ioc/v1/: delivered and bridged.
    agent.publish(&format!("{AGENT_TREE}/events"), "agent alert");
    let bridged = at_central.wait_for(Duration::from_secs(10), |m| {
        m.topic == format!("{AGENT_TREE}/events") && m.payload == b"agent alert"
    });
    assert!(
        bridged.is_some(),
        "the agent's message did not reach the central broker; ward:\n{}",
        ward.broker.log()
    );
    assert!(
        seen.wait_for(Duration::from_secs(5), |m| m.payload == b"agent alert")
            .is_some()
    );

    let local = topics(&seen);
    let remote = topics(&at_central);
    let leaked: Vec<_> = forged
        .iter()
        .filter(|(t, m)| {
            local.contains(&(t.clone(), m.to_string()))
                || remote.contains(&(t.clone(), m.to_string()))
        })
        .collect();
    let signals_at_central = remote
        .iter()
        .filter(|(t, _)| t.starts_with("controllers/"))
        .count();
    println!(
        "controller: {} of 2 signal states delivered, {} of {} forbidden messages delivered; agent: {} of 1 bridged; signal states at central: {signals_at_central}",
        local.iter().filter(|(t, _)| t == SIGNAL).count(),
        leaked.len(),
        forged.len(),
        remote
            .iter()
            .filter(|(t, m)| *t == format!("{AGENT_TREE}/events") && m == "agent alert")
            .count(),
    );
    assert!(leaked.is_empty(), "delivered despite the ACL: {leaked:?}");
    assert_eq!(
        signals_at_central, 0,
        "signal states left the ward: {remote:?}"
    );
    seen.shutdown();
    at_central.shutdown();
}
