#!/usr/bin/env python3
"""Records SRT key material and encrypted data packets from libsrt (srt-live-transmit).

Two captures, each run for AES-128, AES-192 and AES-256:

caller:   srt-live-transmit connects as a caller to this script, which plays an HSv5 listener
          just far enough (induction response, conclusion response with HSRSP and a KMRSP
          echo) for libsrt to start sending.  Saved: the KMREQ libsrt sent in its conclusion
          and the first encrypted SRT data packets it made from the datagrams this script fed
          to srt-live-transmit's UDP input (`ts_datagram(0..64)`, not saved: the test
          regenerates them).

listener: srt-live-transmit listens; this script calls it with a KMREQ it builds itself from a
          fixed seed (the same seed tests/crypto_libsrt.rs gives zerocast), using the
          `cryptography` package for PBKDF2 and RFC 3394.  Saved: the KM sent, libsrt's
          KMRSP (an echo means libsrt accepted it) and the data packets libsrt then encrypts
          towards us with those keys (plaintext: `ts_datagram(100..164)`).  One more run gives
          the listener a different passphrase and saves its whole conclusion response (a
          rejection).

Wire formats: draft-sharabayko-srt §3.2.1 (handshake), §3.2.1.1 (extensions), §3.1 (data).
Every file is hex, one packet or message per line.  Usage:

    python3 capture_km.py [OUTPUT_DIR]      # default: the directory of this script
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

SLT = "/usr/bin/srt-live-transmit"
PASSPHRASE = "0123456789abcdef"  # caller capture (as in the brief)
SEED_PASSPHRASE = "zerocast-interop-passphrase"  # listener capture
WRONG_PASSPHRASE = "not-the-right-passphrase"
SEED_SALT = bytes(0xA0 + i for i in range(16))
SEED_EVEN = bytes(0x30 + i for i in range(32))

HS_INDUCTION = 1
HS_CONCLUSION = 0xFFFFFFFF
EXT_HSREQ, EXT_HSRSP, EXT_KMREQ, EXT_KMRSP = 1, 2, 3, 4
SRT_VERSION = 0x00010501
# TSBPDSND | TSBPDRCV | HAICRYPT | TLPKTDROP | NAKREPORT | REXMITFLG | FILTERCAP
SRT_FLAGS = 0xBF
LATENCY = (120 << 16) | 120
MY_SOCKET = 0x2A2A2A2A
PKTS_WANTED = 3


def ts_datagram(i):
    """A 1316-byte datagram: 7 MPEG-TS packets, PID 0x100, recognizable bytes."""
    out = bytearray()
    for k in range(7):
        n = i * 7 + k
        out += bytes([0x47, 0x01, 0x00, 0x10 | (n & 0x0F)])
        out += bytes((n + j) & 0xFF for j in range(184))
    return bytes(out)


def handshake(dest, version, enc, ext, isn, mtu, flow, hs_type, sock_id, cookie, exts=b""):
    hdr = struct.pack(">IIII", 0x80000000, 0, int(time.monotonic() * 1e6) & 0xFFFFFFFF, dest)
    cif = struct.pack(">IHHIIIIII", version, enc, ext, isn, mtu, flow, hs_type, sock_id, cookie)
    cif += bytes([127, 0, 0, 1]) + bytes(12)
    return hdr + cif + exts


def extension(ext_type, body):
    assert len(body) % 4 == 0
    return struct.pack(">HH", ext_type, len(body) // 4) + body


def parse_handshake(d):
    if len(d) < 64 or struct.unpack(">I", d[:4])[0] != 0x80000000:
        return None
    f = dict(zip(
        ["version", "enc", "ext", "isn", "mtu", "flow", "type", "sock_id", "cookie"],
        struct.unpack(">IHHIIIIII", d[16:48]),
    ))
    exts, rest = {}, d[64:]
    while len(rest) >= 4:
        t, n = struct.unpack(">HH", rest[:4])
        exts[t] = rest[4:4 + 4 * n]
        rest = rest[4 + 4 * n:]
    f["exts"] = exts
    return f


def feed_udp(port, inputs, stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    i = 0
    while not stop.is_set():
        s.sendto(inputs[i % len(inputs)], ("127.0.0.1", port))
        i += 1
        time.sleep(0.02)


def collect_data(sock, want, deadline):
    """First transmissions of `want` data packets, by sequence number."""
    got = {}
    while len(got) < want and time.time() < deadline:
        try:
            d, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if len(d) < 16 or d[0] & 0x80:
            continue
        seq = struct.unpack(">I", d[:4])[0]
        retransmitted = d[4] & 0x04  # R flag, bit 26 of the second word
        if not retransmitted:
            got.setdefault(seq, d)
    return [got[k] for k in sorted(got)]


def run(args):
    return subprocess.Popen([SLT, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def capture_caller(out, pbkeylen, srt_port, in_port):
    inputs = [ts_datagram(i) for i in range(64)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", srt_port))
    sock.settimeout(0.2)
    proc = run([f"udp://:{in_port}",
                f"srt://127.0.0.1:{srt_port}?passphrase={PASSPHRASE}&pbkeylen={pbkeylen}"])
    stop = threading.Event()
    feeder = threading.Thread(target=feed_udp, args=(in_port, inputs, stop), daemon=True)
    km = None
    try:
        deadline = time.time() + 10
        while km is None and time.time() < deadline:
            try:
                d, peer = sock.recvfrom(2048)
            except socket.timeout:
                continue
            hs = parse_handshake(d)
            if hs is None:
                continue
            if hs["type"] == HS_INDUCTION:
                # Induction response (§4.3.1.1.2): version 5, SRT magic, a cookie.
                sock.sendto(handshake(hs["sock_id"], 5, 0, 0x4A17, hs["isn"], hs["mtu"],
                                      hs["flow"], HS_INDUCTION, MY_SOCKET, 0x1234ABCD), peer)
            elif hs["type"] == HS_CONCLUSION:
                km = hs["exts"].get(EXT_KMREQ)
                hsreq = hs["exts"].get(EXT_HSREQ, b"")
                flags = struct.unpack(">I", hsreq[4:8])[0] if len(hsreq) >= 8 else SRT_FLAGS
                exts = extension(EXT_HSRSP, struct.pack(">III", SRT_VERSION, flags, LATENCY))
                exts += extension(EXT_KMRSP, km)
                sock.sendto(handshake(hs["sock_id"], 5, 0, EXT_HSREQ | EXT_KMREQ, hs["isn"],
                                      hs["mtu"], hs["flow"], HS_CONCLUSION, MY_SOCKET,
                                      0x1234ABCD, exts), peer)
        if km is None:
            raise SystemExit(f"caller aes{pbkeylen * 8}: no KMREQ")
        feeder.start()
        data = collect_data(sock, PKTS_WANTED, time.time() + 10)
    finally:
        stop.set()
        proc.terminate()
        proc.wait()
    if len(data) < PKTS_WANTED:
        raise SystemExit(f"caller aes{pbkeylen * 8}: only {len(data)} data packets")
    name = f"libsrt-caller-aes{pbkeylen * 8}"
    write(out, f"{name}-kmreq.hex", [km])
    write(out, f"{name}-data.hex", data)


def seed_km(pbkeylen, passphrase):
    """KM message (§3.2.2) for the fixed seed, even key only."""
    kek = PBKDF2HMAC(algorithm=hashes.SHA1(), length=pbkeylen, salt=SEED_SALT[8:],
                     iterations=2048).derive(passphrase.encode())
    wrapped = aes_key_wrap(kek, SEED_EVEN[:pbkeylen])
    hdr = bytes([0x12, 0x20, 0x29, 0x01, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 4, pbkeylen // 4])
    return hdr + SEED_SALT + wrapped


def call_listener(sock, srt_port, km, pbkeylen):
    dest = ("127.0.0.1", srt_port)
    isn = 0x00ABCDEF
    sock.sendto(handshake(0, 4, 0, 2, isn, 1500, 8192, HS_INDUCTION, MY_SOCKET, 0), dest)
    resp = None
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            d, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        resp = parse_handshake(d)
        if resp and resp["type"] == HS_INDUCTION:
            break
    if not resp:
        raise SystemExit("no induction response")
    exts = extension(EXT_HSREQ, struct.pack(">III", SRT_VERSION, SRT_FLAGS, LATENCY))
    exts += extension(EXT_KMREQ, km)
    sock.sendto(handshake(0, 5, pbkeylen // 8, EXT_HSREQ | EXT_KMREQ, isn, 1500, 8192,
                          HS_CONCLUSION, MY_SOCKET, resp["cookie"], exts), dest)
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            d, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        hs = parse_handshake(d)
        if hs and hs["type"] != HS_INDUCTION:
            return d, hs
    raise SystemExit("no conclusion response")


def capture_listener(out, pbkeylen, srt_port, in_port, wrong=False):
    inputs = [ts_datagram(100 + i) for i in range(64)]
    km = seed_km(pbkeylen, SEED_PASSPHRASE)
    listener_pass = WRONG_PASSPHRASE if wrong else SEED_PASSPHRASE
    proc = run([f"udp://:{in_port}",
                f"srt://:{srt_port}?passphrase={listener_pass}&pbkeylen={pbkeylen}"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()
    feeder = threading.Thread(target=feed_udp, args=(in_port, inputs, stop), daemon=True)
    try:
        time.sleep(1.0)
        raw, hs = call_listener(sock, srt_port, km, pbkeylen)
        if wrong:
            write(out, f"libsrt-listener-aes{pbkeylen * 8}-badsecret-response.hex", [raw])
            return
        kmrsp = hs["exts"].get(EXT_KMRSP)
        if kmrsp is None:
            raise SystemExit(f"listener aes{pbkeylen * 8}: no KMRSP in {hs}")
        feeder.start()
        data = collect_data(sock, PKTS_WANTED, time.time() + 10)
    finally:
        stop.set()
        proc.terminate()
        proc.wait()
    if len(data) < PKTS_WANTED:
        raise SystemExit(f"listener aes{pbkeylen * 8}: only {len(data)} data packets")
    name = f"libsrt-listener-aes{pbkeylen * 8}"
    write(out, f"{name}-kmreq.hex", [km])
    write(out, f"{name}-kmrsp.hex", [kmrsp])
    write(out, f"{name}-data.hex", data)


def write(out, name, items):
    with open(os.path.join(out, name), "w") as f:
        for it in items:
            f.write(it.hex() + "\n")
    print(f"wrote {name} ({len(items)} lines)")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    port = 39000
    for pbkeylen in (16, 24, 32):
        capture_caller(out, pbkeylen, port, port + 1)
        capture_listener(out, pbkeylen, port + 2, port + 3)
        port += 10
    capture_listener(out, 16, port + 2, port + 3, wrong=True)


if __name__ == "__main__":
    main()
