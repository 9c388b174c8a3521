#!/usr/bin/env python3
"""Record real RTMP peers and cut the recordings into fuzz seeds.

Two subcommands:

  rtmp_record.py proxy --listen 127.0.0.1:19351 --upstream 127.0.0.1:19350 --out DIR
      A TCP proxy. Every accepted connection N is forwarded to the upstream server and both
      directions are written to DIR/conn-N.c2s.bin (client to server) and DIR/conn-N.s2c.bin.
      Runs until interrupted (or --seconds).

  rtmp_record.py split --c2s FILE --prefix NAME --seeds fuzz/seeds [--s2c FILE]
      Cuts a client-to-server recording into seeds for the targets in fuzz/fuzz_targets:
      handshake (C0+C1, C0+C1+C2), the chunk stream after the handshake, AMF0 command and data
      bodies, FLV video/audio tag bodies, SPS/PPS/SEI NAL units and the AAC
      AudioSpecificConfig. With --s2c, the server's answer becomes a client-session seed.

Only the standard library is used, so this runs wherever python3 does.
"""

import argparse
import os
import select
import socket
import struct
import sys
import threading
import time

HANDSHAKE = 1 + 1536  # C0 + C1
CHUNK_KEEP = 4096  # bytes of chunk stream kept in stream seeds
FRAME_KEEP = 3000  # bytes of a keyframe kept in video seeds


def pump(a, b, log):
    """Copies a -> b until either side closes, appending everything to log."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            log.write(data)
            log.flush()
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(args):
    host, port = args.listen.rsplit(":", 1)
    uhost, uport = args.upstream.rsplit(":", 1)
    os.makedirs(args.out, exist_ok=True)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    deadline = time.time() + args.seconds if args.seconds else None
    n = 0
    while deadline is None or time.time() < deadline:
        ready, _, _ = select.select([srv], [], [], 0.5)
        if not ready:
            continue
        client, _ = srv.accept()
        upstream = socket.create_connection((uhost, int(uport)))
        base = os.path.join(args.out, f"conn-{n}")
        c2s = open(base + ".c2s.bin", "wb")
        s2c = open(base + ".s2c.bin", "wb")
        threading.Thread(target=pump, args=(client, upstream, c2s), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, s2c), daemon=True).start()
        print(f"connection {n} -> {base}.*.bin", file=sys.stderr)
        n += 1


class Message:
    def __init__(self, csid, mtype, stream_id, ts, body):
        self.csid, self.type, self.stream_id, self.ts, self.body = csid, mtype, stream_id, ts, body


def messages(stream):
    """Reassembles RTMP messages from a chunk stream (spec 1.0 section 5.3).

    Stops quietly at the first incomplete chunk; returns (messages, bytes consumed per message end).
    """
    chunk_size = 128
    prev = {}  # csid -> [ts, length, type, stream_id, delta, buffer]
    out = []
    i = 0
    n = len(stream)
    while i < n:
        start = i
        b0 = stream[i]
        i += 1
        fmt, csid = b0 >> 6, b0 & 0x3F
        if csid == 0:
            if i + 1 > n:
                break
            csid = 64 + stream[i]
            i += 1
        elif csid == 1:
            if i + 2 > n:
                break
            csid = 64 + stream[i] + 256 * stream[i + 1]
            i += 2
        st = prev.setdefault(csid, [0, 0, 0, 0, 0, b""])
        hlen = (11, 7, 3, 0)[fmt]
        if i + hlen > n:
            break
        h = stream[i:i + hlen]
        i += hlen
        ts_field = None
        if fmt <= 2:
            ts_field = int.from_bytes(h[0:3], "big")
        if fmt <= 1:
            st[1] = int.from_bytes(h[3:6], "big")
            st[2] = h[6]
        if fmt == 0:
            st[3] = struct.unpack("<I", h[7:11])[0]
        if ts_field == 0xFFFFFF or (fmt == 3 and st[4] >= 0xFFFFFF):
            if i + 4 > n:
                break
            ts_field = int.from_bytes(stream[i:i + 4], "big")
            i += 4
        if not st[5]:  # first chunk of a message
            if fmt == 0:
                st[0] = ts_field
                st[4] = ts_field
            elif fmt in (1, 2):
                st[4] = ts_field
                st[0] += ts_field
            else:
                st[0] += st[4]
        take = min(chunk_size, st[1] - len(st[5]))
        if i + take > n:
            i = start
            break
        st[5] += stream[i:i + take]
        i += take
        if len(st[5]) == st[1]:
            m = Message(csid, st[2], st[3], st[0], st[5])
            st[5] = b""
            out.append((m, i))
            if m.type == 1 and len(m.body) >= 4:
                chunk_size = int.from_bytes(m.body[:4], "big") & 0x7FFFFFFF
    return out


def amf0_string(body, off):
    """The AMF0 string at body[off] (marker 2), or None."""
    if off + 3 <= len(body) and body[off] == 2:
        ln = int.from_bytes(body[off + 1:off + 3], "big")
        return body[off + 3:off + 3 + ln].decode("utf-8", "replace")
    return None


def nal_units(avcc, size=4):
    i = 0
    while i + size <= len(avcc):
        ln = int.from_bytes(avcc[i:i + size], "big")
        i += size
        yield avcc[i:i + ln]
        i += ln


def write(seeds, target, name, data):
    d = os.path.join(seeds, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    print(f"{target}/{name} ({len(data)} bytes)")


def split(args):
    rec = open(args.c2s, "rb").read()
    p, seeds = args.prefix, args.seeds
    hs_end = HANDSHAKE + 1536
    write(seeds, "rtmp_handshake", f"{p}-c0c1.bin", rec[:HANDSHAKE])
    write(seeds, "rtmp_handshake", f"{p}-c0c1c2.bin", rec[:hs_end])
    chunks = rec[hs_end:]
    msgs = messages(chunks)
    # The session seed is the whole opening up to a little media; the chunk seed the same
    # stream without the handshake, with a split byte in front (see fuzz_chunk).
    session_end = min(len(rec), hs_end + CHUNK_KEEP)
    write(seeds, "rtmp_server_session", f"{p}-session.bin", rec[:session_end])
    write(seeds, "rtmp_chunk", f"{p}-chunks.bin", bytes([200]) + chunks[:CHUNK_KEEP])

    seen = set()
    for m, _ in msgs:
        if m.type in (20, 18):  # AMF0 command / data
            name = amf0_string(m.body, 0) or "unknown"
            if name in ("@setDataFrame", "onMetaData"):
                name = "metadata"
            if name in seen:
                continue
            seen.add(name)
            for t in ("rtmp_amf0", "rtmp_amf0_roundtrip", "rtmp_command"):
                write(seeds, t, f"{p}-{name}.bin", m.body)
        elif m.type == 9 and len(m.body) >= 5:
            avc_type = m.body[1]
            key = m.body[0] >> 4 == 1
            if avc_type == 0 and "avc-seq" not in seen:
                seen.add("avc-seq")
                write(seeds, "flv_video", f"{p}-avc-seq-header.bin", b"\x04" + m.body)
                cfg = m.body[5:]
                write(seeds, "h264_avc_config", f"{p}-avcc.bin", cfg)
                # AVCDecoderConfigurationRecord: SPS count at 5, then length-prefixed SPS, PPS.
                nsps = cfg[5] & 0x1F
                o = 6
                for _ in range(nsps):
                    ln = int.from_bytes(cfg[o:o + 2], "big")
                    write(seeds, "h264_sps", f"{p}-sps.bin", cfg[o + 2:o + 2 + ln])
                    o += 2 + ln
                ln = int.from_bytes(cfg[o + 1:o + 3], "big")
                write(seeds, "h264_sps", f"{p}-pps.bin", cfg[o + 3:o + 3 + ln])
                frame = struct.pack(">H", 4096) + struct.pack(">H", 4) + struct.pack(">I", m.ts)
                write(seeds, "rtmp_chunk_roundtrip", f"{p}-avc-seq-header.bin", frame + m.body)
            elif avc_type == 1 and key and "avc-key" not in seen:
                seen.add("avc-key")
                write(seeds, "flv_video", f"{p}-keyframe-truncated.bin",
                      b"\x04" + m.body[:FRAME_KEEP])
                for nal in nal_units(m.body[5:]):
                    if nal and nal[0] & 0x1F == 6 and "sei" not in seen:
                        seen.add("sei")
                        write(seeds, "h264_sei", f"{p}-sei.bin", nal)
            elif avc_type == 1 and not key and "avc-inter" not in seen:
                seen.add("avc-inter")
                write(seeds, "flv_video", f"{p}-interframe-truncated.bin",
                      b"\x04" + m.body[:FRAME_KEEP])
                head = struct.pack(">HHI", 128, 6, m.ts)
                write(seeds, "rtmp_chunk_roundtrip", f"{p}-interframe-truncated.bin",
                      head + m.body[:FRAME_KEEP])
        elif m.type == 8 and len(m.body) >= 2:
            if m.body[0] >> 4 == 10 and m.body[1] == 0 and "aac-seq" not in seen:
                seen.add("aac-seq")
                write(seeds, "flv_audio", f"{p}-aac-seq-header.bin", m.body)
                write(seeds, "aac_config", f"{p}-asc.bin", m.body[2:])
            elif m.body[0] >> 4 == 10 and m.body[1] == 1 and "aac-raw" not in seen:
                seen.add("aac-raw")
                write(seeds, "flv_audio", f"{p}-aac-frame.bin", m.body)
    if args.s2c:
        s2c = open(args.s2c, "rb").read()
        write(seeds, "rtmp_client_session", f"{args.s2c_prefix or p}-answer.bin",
              s2c[:HANDSHAKE + 1536 + CHUNK_KEEP])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=0)
    s = sub.add_parser("split")
    s.add_argument("--c2s", required=True)
    s.add_argument("--s2c")
    s.add_argument("--s2c-prefix")
    s.add_argument("--prefix", required=True)
    s.add_argument("--seeds", required=True)
    args = ap.parse_args()
    proxy(args) if args.cmd == "proxy" else split(args)


if __name__ == "__main__":
    main()
