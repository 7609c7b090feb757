/* Thin C layer over libavcodec for the agent's in-process software decoder
 * (agent/decode/lav.rs). C so that the struct layouts come from the system's
 * own headers at build time, not from hand-written Rust mirrors of them.
 *
 * One decoder per camera session; frames are borrowed views valid until the
 * next call on the same decoder. libavcodec keeps only the pictures the
 * stream's reference structure needs (its own pool), and nothing here copies
 * a picture: the caller copies the few frames it keeps. */
#include <libavcodec/avcodec.h>
#include <libavutil/error.h>
#include <libavutil/pixdesc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct ioc_lav {
    AVCodecContext *ctx;
    AVPacket *pkt;
    AVFrame *frame;
} ioc_lav;

typedef struct ioc_lav_frame {
    int width;
    int height;
    /* 0: 8-bit 4:2:0 planar (I420); -1: anything else, see format_name. */
    int format;
    const char *format_name;
    const uint8_t *data[3];
    int linesize[3];
    int64_t pts;
    /* 1 when libavcodec concealed damage in this picture (lost or corrupt
     * data it did not refuse outright). */
    int corrupt;
} ioc_lav_frame;

static void put_err(char *err, int len, const char *msg) {
    if (err && len > 0) {
        snprintf(err, (size_t)len, "%s", msg);
    }
}

ioc_lav *ioc_lav_open(int hevc, int threads, char *err, int errlen) {
    const AVCodec *codec = avcodec_find_decoder(hevc ? AV_CODEC_ID_HEVC : AV_CODEC_ID_H264);
    if (!codec) {
        put_err(err, errlen, hevc ? "libavcodec has no H.265 decoder" : "libavcodec has no H.264 decoder");
        return NULL;
    }
    ioc_lav *d = av_mallocz(sizeof(ioc_lav));
    if (!d) {
        put_err(err, errlen, "out of memory");
        return NULL;
    }
    d->ctx = avcodec_alloc_context3(codec);
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->ctx || !d->pkt || !d->frame) {
        put_err(err, errlen, "out of memory");
        goto fail;
    }
    d->ctx->thread_count = threads > 0 ? threads : 1;
    /* Damage is counted per camera (frames_corrupt) and logged by the agent
     * with the camera's id; libavcodec's own lines on stderr carry neither
     * and a damaged stream prints hundreds of them. */
    av_log_set_level(AV_LOG_FATAL);
    d->ctx->pkt_timebase = (AVRational){1, 1000000000};
    int r = avcodec_open2(d->ctx, codec, NULL);
    if (r < 0) {
        char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
        av_strerror(r, buf, sizeof(buf));
        put_err(err, errlen, buf);
        goto fail;
    }
    return d;
fail:
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
    avcodec_free_context(&d->ctx);
    av_free(d);
    return NULL;
}

/* 0 on success, else a negative AVERROR. AVERROR(EAGAIN) means frames must
 * be received first. */
int ioc_lav_send(ioc_lav *d, const uint8_t *data, int len, int64_t pts) {
    av_packet_unref(d->pkt);
    if (data && len > 0) {
        int r = av_new_packet(d->pkt, len);
        if (r < 0) {
            return r;
        }
        memcpy(d->pkt->data, data, (size_t)len);
        d->pkt->pts = pts;
        d->pkt->dts = AV_NOPTS_VALUE;
        return avcodec_send_packet(d->ctx, d->pkt);
    }
    return avcodec_send_packet(d->ctx, NULL);
}

/* Non-reference pictures of the next packets are not decoded (on) or are
 * (off). Frame threads take the setting with each packet they are handed. */
void ioc_lav_skip_nonref(ioc_lav *d, int on) {
    d->ctx->skip_frame = on ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
}

/* 1: a frame is in *out; 0: none until more input; negative: AVERROR. */
int ioc_lav_receive(ioc_lav *d, ioc_lav_frame *out) {
    av_frame_unref(d->frame);
    int r = avcodec_receive_frame(d->ctx, d->frame);
    if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) {
        return 0;
    }
    if (r < 0) {
        return r;
    }
    AVFrame *f = d->frame;
    memset(out, 0, sizeof(*out));
    out->width = f->width;
    out->height = f->height;
    out->format = (f->format == AV_PIX_FMT_YUV420P || f->format == AV_PIX_FMT_YUVJ420P) ? 0 : -1;
    out->format_name = av_get_pix_fmt_name((enum AVPixelFormat)f->format);
    for (int i = 0; i < 3; i++) {
        out->data[i] = f->data[i];
        out->linesize[i] = f->linesize[i];
    }
    out->pts = f->best_effort_timestamp != AV_NOPTS_VALUE ? f->best_effort_timestamp : f->pts;
    out->corrupt = (f->flags & AV_FRAME_FLAG_CORRUPT) != 0 || f->decode_error_flags != 0;
    return 1;
}

void ioc_lav_strerror(int code, char *buf, int len) {
    if (av_strerror(code, buf, (size_t)len) < 0) {
        snprintf(buf, (size_t)len, "libavcodec error %d", code);
    }
}

int ioc_lav_is_invalid_data(int code) {
    return code == AVERROR_INVALIDDATA;
}

int ioc_lav_is_again(int code) {
    return code == AVERROR(EAGAIN);
}

void ioc_lav_close(ioc_lav *d) {
    if (!d) {
        return;
    }
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
    avcodec_free_context(&d->ctx);
    av_free(d);
}
