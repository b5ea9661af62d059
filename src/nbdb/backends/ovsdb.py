"""OVSDB backend: the OVN Northbound database itself, through nbdb's typed models.

URLs::

    ovsdb+tcp://HOST:PORT[,HOST:PORT...][/DATABASE][?options]
    ovsdb+ssl://HOST:PORT[,HOST:PORT...][/DATABASE]?private_key=K&certificate=C&ca_cert=CA
    ovsdb+unix:///PATH/TO/SOCKET[?options]

``DATABASE`` (or ``?database=``) is the OVN Northbound database name
(default ``OVN_Northbound``). Options: ``model_db`` (default ``nbdb``: the
database serving :func:`generate_schema`'s tables for models with no OVN table;
used when the server has it), ``timeout`` (seconds to wait for the server,
default 20), ``namespace``. Several remotes form a raft cluster: the ``ovs``
IDL follows the leader and writes go to it only.

With ``ovsdb+ssl``, ``private_key`` and ``certificate`` are the client's (ovsdb-server
always asks for one) and the server's certificate must chain to ``ca_cert``; as with
OVS's own tools, the host name is not checked. Each target gets its own SSL context,
so connections with different certificates can live in one process.

The ``ovs`` IDL keeps the replica (``monitor_cond_since``) and is driven from
one thread of this backend; every other thread talks to it through a queue.
See :mod:`nbdb.families.ovsdb` for the mapping, versions and revisions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from nbdb import errors
from nbdb.capabilities import Atomicity, Capabilities, Durability
from nbdb.families.ovsdb import (
    EXT_NAMESPACE,
    Mapping_,
    OvsdbFamilyBackend,
    Replica,
    TransactError,
    TransactUnknownOutcome,
    VersionBook,
    build_mapping,
    generate_schema,
)
from nbdb.options import Options
from nbdb.spi import LockHandle

__all__ = ["OvsdbBackend", "generate_schema"]

log = logging.getLogger(__name__)

DEFAULT_NB = "OVN_Northbound"
DEFAULT_MODEL_DB = "nbdb"
_OPTIONS = frozenset({"database", "model_db", "timeout", "private_key", "certificate", "ca_cert", "namespace"})


# ---------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str  # tcp | ssl | unix
    remotes: tuple[str, ...]  # host:port, or a socket path
    database: str
    model_db: str
    timeout: float
    private_key: str | None
    certificate: str | None
    ca_cert: str | None
    namespace: str

    def ovs_remotes(self) -> str:
        return ",".join(f"{self.scheme}:{r}" for r in self.remotes)

    def describe(self) -> str:
        return f"ovsdb+{self.scheme}://" + ",".join(self.remotes)


def _ssl_context(target: _Target) -> ssl.SSLContext:
    """The client SSL context of ``target``: its key and certificate, trusting ``ca_cert`` only."""
    assert target.private_key is not None and target.certificate is not None and target.ca_cert is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Like OVS's own clients: the peer must chain to the CA; its name is not checked.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=target.ca_cert)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ValidationError(f"ovsdb+ssl:// cannot load ca_cert {target.ca_cert!r}: {exc}") from None
    try:
        context.load_cert_chain(target.certificate, target.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise errors.ValidationError(
            f"ovsdb+ssl:// cannot load certificate {target.certificate!r} with private_key "
            f"{target.private_key!r}: {exc}"
        ) from None
    return context


def _tls_refused(remote: str, exc: BaseException) -> errors.AuthError:
    return errors.AuthError(
        f"the OVSDB server at {remote} refused the TLS connection: {exc} "
        "(is the client certificate signed by a CA the server trusts?)"
    )


def _parse(url: str, options: dict[str, Any]) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ovsdb+tcp", "ovsdb+ssl", "ovsdb+unix"):
        raise errors.ValidationError(f"not an OVSDB URL: {url!r} (want ovsdb+tcp://, ovsdb+ssl:// or ovsdb+unix://)")
    query = Options.merged(
        parts.query,
        {k: str(v) for k, v in options.items() if v is not None},
        _OPTIONS,
        "ovsdb",
        keep_blank_values=False,
    )
    kind = scheme.split("+")[1]
    if kind == "unix":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise errors.ValidationError("ovsdb+unix:// needs a socket path: ovsdb+unix:///var/run/ovn/ovnnb_db.sock")
        remotes: tuple[str, ...] = (path,)
        database = query.get("database", DEFAULT_NB)
    else:
        hosts = [h.strip() for h in parts.netloc.split(",") if h.strip()]
        if not hosts:
            raise errors.ValidationError(f"{scheme}:// needs host:port")
        for host in hosts:
            if ":" not in host or not host.rsplit(":", 1)[1].isdigit():
                raise errors.ValidationError(f"{scheme}:// remote {host!r} is not host:port")
        remotes = tuple(hosts)
        database = parts.path.strip("/") or query.get("database", DEFAULT_NB)
    try:
        timeout = float(query.get("timeout", "20"))
    except ValueError:
        raise errors.ValidationError(f"ovsdb timeout must be a number, not {query['timeout']!r}") from None
    if timeout <= 0:
        raise errors.ValidationError("ovsdb timeout must be positive")
    target = _Target(
        kind,
        remotes,
        database,
        query.get("model_db") or DEFAULT_MODEL_DB,
        timeout,
        query.get("private_key"),
        query.get("certificate"),
        query.get("ca_cert"),
        query.get("namespace", ""),
    )
    if kind == "ssl" and not (target.private_key and target.certificate and target.ca_cert):
        raise errors.ValidationError("ovsdb+ssl:// needs private_key, certificate and ca_cert (query or options)")
    for tls_file in (target.private_key, target.certificate, target.ca_cert):
        if tls_file is not None and not os.path.isfile(tls_file):
            raise errors.ValidationError(f"ovsdb+ssl:// file {tls_file!r} does not exist")
    return target


# ---------------------------------------------------------------------------- a small JSON-RPC client


class _Rpc:
    """A blocking JSON-RPC connection (schema fetch, leader checks, locks) with a reader thread."""

    def __init__(self, target: _Target, remote: str, timeout: float) -> None:
        self._target = target
        self._remote = remote
        self._tls = target.scheme == "ssl"
        self._sock = self._connect(remote, timeout)
        self._lock = threading.Lock()
        # One SSL object must not read and write from two threads at once: TLS reads and
        # writes take turns under this lock (the reader waits for data outside it).
        self._io_lock = threading.Lock()
        self._read_error: BaseException | None = None
        self._next = 0
        self._pending: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="nbdb-ovsdb-rpc", daemon=True)
        self._reader.start()

    def _connect(self, remote: str, timeout: float) -> socket.socket:
        try:
            if self._target.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(remote)
            else:
                host, port = remote.rsplit(":", 1)
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
                if self._target.scheme == "ssl":
                    context = _ssl_context(self._target)
                    try:
                        sock = context.wrap_socket(sock)
                    except BaseException:
                        sock.close()
                        raise
        except ssl.SSLCertVerificationError as exc:
            raise errors.AuthError(
                f"TLS handshake with {remote} failed: {exc.verify_message} (is ca_cert the CA that signed the "
                "server's certificate?)"
            ) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            # A server that closes during the handshake is not (yet) serving TLS: retried.
            raise errors.BackendUnavailableError(f"TLS handshake with {remote} was cut: {exc}") from None
        except ssl.SSLError as exc:
            raise _tls_refused(remote, exc) from None
        except OSError as exc:
            raise errors.BackendUnavailableError(f"cannot connect to OVSDB at {remote}: {exc}") from None
        # TLS: short blocking reads, so the reader gives writers their turn.
        sock.settimeout(0.05 if self._tls else None)
        return sock

    def _recv(self) -> bytes | None:
        """One read from the socket; None when nothing arrived yet."""
        if not self._tls:
            return self._sock.recv(65536)
        assert isinstance(self._sock, ssl.SSLSocket)
        with self._io_lock:
            pending = self._sock.pending()
        if not pending:
            readable, _, _ = select.select([self._sock], [], [], 0.5)
            if not readable:
                return None
        with self._io_lock:
            try:
                return self._sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                return None

    def _read(self) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while True:
                chunk = self._recv()
                if chunk is None:
                    continue
                if not chunk:
                    break
                buf += chunk.decode()
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = decoder.raw_decode(buf)
                    except ValueError:
                        break
                    buf = buf[end:]
                    self._dispatch(msg)
        except (OSError, ValueError) as exc:
            self._read_error = exc
        finally:
            self.closed.set()
            for q in list(self._pending.values()):
                q.put({"error": "connection closed"})

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("method") == "echo" and msg.get("id") is not None:
            self._send({"id": msg["id"], "result": msg.get("params", []), "error": None})
        elif msg.get("method") is not None:
            self.notifications.put(msg)
        else:
            q = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if q is not None:
                q.put(msg)

    def _send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg).encode()
        with self._lock:
            if not self._tls:
                self._sock.sendall(data)
                return
            with self._io_lock:
                self._sock.settimeout(5.0)
                try:
                    self._sock.sendall(data)
                finally:
                    self._sock.settimeout(0.05)

    def _raise_if_refused(self) -> None:
        """Raise :class:`AuthError` if the server ended the TLS session with an alert.

        TLS 1.3 servers check the client certificate after the client's handshake is
        done: a refusal shows up as an alert on the first read.
        """
        error = self._read_error
        if (
            self._tls
            and isinstance(error, ssl.SSLError)
            and not isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
        ):
            raise _tls_refused(self._remote, error)

    def call(self, method: str, params: list[Any], timeout: float) -> Any:
        with self._lock:
            self._next += 1
            mid = self._next
        reply: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending[mid] = reply
        try:
            self._send({"id": mid, "method": method, "params": params})
            msg = reply.get(timeout=timeout)
        except OSError as exc:
            # The reader may hold the reason (a TLS alert) for the broken pipe.
            self.closed.wait(1.0)
            self._raise_if_refused()
            raise errors.BackendUnavailableError(f"OVSDB connection failed: {exc}") from None
        except queue.Empty:
            raise errors.BackendUnavailableError(f"OVSDB did not answer {method} within {timeout}s") from None
        finally:
            self._pending.pop(mid, None)
        if msg.get("error") is not None:
            if self.closed.is_set():
                self._raise_if_refused()
            raise errors.BackendUnavailableError(f"OVSDB {method} failed: {msg['error']}")
        return msg.get("result")

    def close(self) -> None:
        with self._io_lock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sock.close()
        self.closed.wait(2)


def _leader_rpc(target: _Target, database: str, deadline: float) -> _Rpc:
    """A connection to a server that may write ``database`` (the raft leader, or the standalone server)."""
    problems: list[str] = []
    while True:
        for remote in target.remotes:
            try:
                rpc = _Rpc(target, remote, max(0.5, min(5.0, deadline - time.monotonic())))
            except errors.AuthError:
                raise
            except errors.BackendUnavailableError as exc:
                problems.append(str(exc))
                continue
            try:
                result = rpc.call(
                    "transact",
                    [
                        "_Server",
                        {
                            "op": "select",
                            "table": "Database",
                            "where": [["name", "==", database]],
                            "columns": ["model", "leader", "connected"],
                        },
                    ],
                    5.0,
                )
                rows = result[0].get("rows", []) if isinstance(result, list) and result else []
                if not rows:
                    problems.append(f"{remote} does not serve {database}")
                elif rows[0].get("model") == "clustered" and not (rows[0].get("leader") and rows[0].get("connected")):
                    problems.append(f"{remote} is not the raft leader")
                else:
                    return rpc
            except errors.BackendUnavailableError as exc:
                problems.append(str(exc))
            except BaseException:
                rpc.close()
                raise
            rpc.close()
        if time.monotonic() >= deadline:
            raise errors.BackendUnavailableError(
                f"no usable OVSDB server for {database} at {target.describe()}: {'; '.join(problems[-3:])}"
            )
        time.sleep(0.2)


# ---------------------------------------------------------------------------- the IDL thread


class _Request:
    """One raw ``transact`` handed to the IDL thread; its reply comes back through ``_process_reply``."""

    def __init__(self, db: str, ops: list[dict[str, Any]], on_reply: Callable[[list[Any]], None] | None) -> None:
        self.db = db
        self.ops = ops
        self.on_reply = on_reply
        self.sent = False
        self.done = threading.Event()
        self.result: list[Any] | None = None
        self.error: errors.NbdbError | None = None

    # The IDL sets ``_status`` to TRY_AGAIN on every outstanding request when the connection drops.
    @property
    def _status(self) -> str:
        return "incomplete"

    @_status.setter
    def _status(self, value: str) -> None:
        if not self.done.is_set():
            self.error = TransactUnknownOutcome("connection lost before the reply")
            self.done.set()

    def _process_reply(self, msg: Any) -> None:
        import ovs.jsonrpc

        if msg.type == ovs.jsonrpc.Message.T_ERROR:
            self.error = errors.ValidationError(f"OVSDB rejected the request: {msg.error}")
        elif not isinstance(msg.result, list):
            self.error = TransactError(f"unexpected OVSDB reply: {msg.result!r}")
        else:
            self.result = msg.result
            if self.on_reply is not None:
                try:
                    self.on_reply(msg.result)
                except Exception:
                    log.exception("ovsdb: reply hook failed")
        self.done.set()


def _make_idl_class() -> type:
    import ovs.db.idl

    class _NbdbIdl(ovs.db.idl.Idl):  # type: ignore[misc]
        """The ``ovs`` IDL, reporting each server transaction to a :class:`Replica`."""

        def __init__(self, remote: str, helper: Any, replica: Replica, db: str) -> None:
            super().__init__(remote, helper, leader_only=True)
            self._nbdb_replica = replica
            self._nbdb_db = db
            self._nbdb_batch: list[tuple[str, uuid.UUID, dict[str, Any] | None]] | None = None

        def notify(self, event: str, row: Any, updates: Any = None) -> None:
            if self._nbdb_batch is None:
                return
            table = row._table.name
            if event == ovs.db.idl.ROW_DELETE:
                self._nbdb_batch.append((table, row.uuid, None))
            else:
                data = {name: datum.to_json() for name, datum in row._data.items()}
                self._nbdb_batch.append((table, row.uuid, data))

        def _Idl__do_parse_update(self, table_updates: Any, version: Any, tables: Any) -> None:
            if tables is not self.tables:
                ovs.db.idl.Idl._Idl__do_parse_update(self, table_updates, version, tables)
                return
            self._nbdb_batch = []
            try:
                ovs.db.idl.Idl._Idl__do_parse_update(self, table_updates, version, tables)
                self._nbdb_replica.apply(self._nbdb_db, self._nbdb_batch)
            finally:
                self._nbdb_batch = None

        def _Idl__clear(self) -> None:
            ovs.db.idl.Idl._Idl__clear(self)
            self._nbdb_replica.reset(self._nbdb_db)

    return _NbdbIdl


_SSL_METHOD_IDS = itertools.count(1)


def _register_ssl_method(context: ssl.SSLContext) -> str:
    """Register an ``ovs`` stream method that opens SSL connections with ``context``; return its name.

    The ``ovs`` library's own ``ssl:`` method reads one key, certificate and CA per process
    (``Stream.ssl_set_*``); a method per target keeps targets with different certificates apart.
    """
    import ovs.socket_util
    import ovs.stream

    def _open(suffix: str, dscp: int) -> tuple[int, Any]:
        # ovs.stream.SSLStream._open with this target's context.
        address = ovs.socket_util.inet_parse_active(suffix, 0)
        family, sock = ovs.socket_util.inet_create_socket_active(socket.SOCK_STREAM, address)
        if sock is None:
            return family, sock
        ssl_sock = context.wrap_socket(sock, do_handshake_on_connect=False)
        error = ovs.socket_util.inet_connect_active(ssl_sock, address, family, dscp)
        if not error:
            try:
                ssl_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                ssl_sock.close()
                return ovs.socket_util.get_exception_errno(exc), None
        return error, ssl_sock

    stream_class = type("NbdbSslStream", (ovs.stream.SSLStream,), {"_open": staticmethod(_open)})
    name = f"nbdbssl{next(_SSL_METHOD_IDS)}"
    # Copy-on-write: an IDL thread may be iterating the table in Stream._find_method.
    ovs.stream.Stream._SOCKET_METHODS = {**ovs.stream.Stream._SOCKET_METHODS, f"{name}:": stream_class}
    return name


def _unregister_ssl_method(name: str) -> None:
    import ovs.stream

    methods = dict(ovs.stream.Stream._SOCKET_METHODS)
    methods.pop(f"{name}:", None)
    ovs.stream.Stream._SOCKET_METHODS = methods


class _Driver:
    """Owns the IDLs and the one thread that runs them; shared by backends with the same target."""

    def __init__(self, target: _Target) -> None:
        self.target = target
        self.users = 0
        self.versions = VersionBook()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        deadline = time.monotonic() + target.timeout
        rpc = _leader_rpc(target, target.database, deadline)
        try:
            dbs = rpc.call("list_dbs", [], 5.0)
            if target.database not in dbs:
                raise errors.BackendUnavailableError(
                    f"{target.describe()} does not serve database {target.database!r} (it serves {dbs})"
                )
            self.dbs = [target.database] + ([target.model_db] if target.model_db in dbs else [])
            schemas = {db: rpc.call("get_schema", [db], 5.0) for db in self.dbs}
        finally:
            rpc.close()
        self.nb_db = target.database
        self.model_db = target.model_db if target.model_db in self.dbs else None
        self.mapping: Mapping_ = build_mapping(schemas, self.nb_db, self.model_db)
        self.replica = Replica(self.mapping, self.versions, target.namespace)
        self._ssl_method = _register_ssl_method(_ssl_context(target)) if target.scheme == "ssl" else None
        self._idls = self._make_idls(schemas)
        self._thread = threading.Thread(target=self._run, name="nbdb-ovsdb-idl", daemon=True)
        self._thread.start()
        with self.replica.cond:
            while set(self.dbs) - self.replica.synced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise errors.BackendUnavailableError(
                        f"OVSDB monitor of {target.describe()} did not sync within {target.timeout}s"
                    )
                self.replica.cond.wait(min(remaining, 0.1))

    def _make_idls(self, schemas: dict[str, Any]) -> dict[str, Any]:
        import ovs.db.idl

        remotes = self.target.ovs_remotes()
        if self._ssl_method is not None:
            remotes = ",".join(f"{self._ssl_method}:{r}" for r in self.target.remotes)
        idl_class = _make_idl_class()
        idls = {}
        for db in self.dbs:
            helper = ovs.db.idl.SchemaHelper(None, schemas[db])
            columns = self.mapping.monitor_columns(db)
            for table, cols in columns.items():
                helper.register_columns(table, cols)
            if not columns:
                continue
            idl = idl_class(remotes, helper, self.replica, db)
            if self.target.namespace:
                for table in columns:
                    idl.cond_change(
                        table, [["external_ids", "includes", ["map", [[EXT_NAMESPACE, self.target.namespace]]]]]
                    )
            idls[db] = idl
        for db in self.dbs:
            if db not in idls:
                self.replica.apply(db, [])
        return idls

    def _run(self) -> None:
        import ovs.poller

        waiting: list[tuple[_Request, float]] = []
        while not self._stop.is_set():
            try:
                for idl in self._idls.values():
                    idl.run()
                while True:
                    try:
                        waiting.append((self._queue.get_nowait(), time.monotonic() + self.target.timeout))
                    except queue.Empty:
                        break
                still = []
                for request, deadline in waiting:
                    if request.done.is_set():
                        continue
                    idl = self._idls[request.db]
                    if idl.state == idl.IDL_S_MONITORING and idl._session.is_connected():
                        self._send(idl, request)
                    elif time.monotonic() > deadline:
                        request.error = errors.BackendUnavailableError(
                            f"OVSDB at {self.target.describe()} unreachable for {self.target.timeout}s"
                        )
                        request.done.set()
                    else:
                        still.append((request, deadline))
                waiting = still
                poller = ovs.poller.Poller()
                for idl in self._idls.values():
                    idl.wait(poller)
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                poller.timer_wait(100 if waiting else 1000)
                poller.block()
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            except Exception:
                log.exception("ovsdb: IDL thread error")
                time.sleep(0.1)
        for request, _ in waiting:
            request.error = errors.BackendUnavailableError("the OVSDB backend was closed")
            request.done.set()

    @staticmethod
    def _send(idl: Any, request: _Request) -> None:
        import ovs.jsonrpc

        msg = ovs.jsonrpc.Message.create_request("transact", [request.db, *request.ops])
        error = idl._session.send(msg)
        if error:
            request.error = TransactError(f"send failed: {os.strerror(error)}")
            request.done.set()
            return
        request.sent = True
        idl._outstanding_txns[msg.id] = request

    def transact(self, db: str, ops: list[dict[str, Any]], on_reply: Callable[[list[Any]], None] | None) -> list[Any]:
        if self._stop.is_set():
            raise errors.BackendUnavailableError("the OVSDB backend is closed")
        if db not in self._idls:
            raise errors.UnsupportedError(f"database {db!r} is not served at {self.target.describe()}")
        request = _Request(db, ops, on_reply)
        self._queue.put(request)
        os.write(self._wake_w, b"x")
        if not request.done.wait(self.target.timeout * 2 + 5):
            raise errors.BackendUnavailableError(f"OVSDB did not answer within {self.target.timeout * 2 + 5}s")
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        for idl in self._idls.values():
            try:
                idl.close()
            except Exception:
                log.debug("ovsdb: closing an IDL failed", exc_info=True)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._ssl_method is not None:
            _unregister_ssl_method(self._ssl_method)
        # Wake anyone blocked on the replica.
        with self.replica.cond:
            self.replica.cond.notify_all()


_DRIVERS: dict[_Target, _Driver] = {}
_DRIVERS_LOCK = threading.Lock()


def _acquire_driver(target: _Target) -> _Driver:
    with _DRIVERS_LOCK:
        driver = _DRIVERS.get(target)
        if driver is None:
            driver = _Driver(target)
            _DRIVERS[target] = driver
        driver.users += 1
        return driver


def _release_driver(driver: _Driver) -> None:
    with _DRIVERS_LOCK:
        driver.users -= 1
        if driver.users > 0:
            return
        if _DRIVERS.get(driver.target) is driver:
            del _DRIVERS[driver.target]
    driver.close()


# ---------------------------------------------------------------------------- the backend


@dataclass(slots=True)
class _HeldLock:
    rpc: _Rpc
    name: str
    local: threading.Lock = field(default_factory=threading.Lock)


class OvsdbBackend(OvsdbFamilyBackend):
    """The OVN Northbound database (and optionally a model database) on ovsdb-server."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        transactions=Atomicity.ATOMIC,
        linearizable_reads=True,
        server_side_topic_filter=False,
        durability=Durability.DURABLE,
        history="the last 10,000 changes seen by this connection; a revision of another connection or process, "
        "or one from before the monitor had to reload (standalone server restart), is gone",
        cross_process=True,
        notes="Objects are rows of the real OVN_Northbound tables (interoperable with ovn-nbctl and ovn-northd). "
        "List fields come back in OVSDB set order (sorted, without duplicates). Locks are OVSDB's native "
        "locks: held as long as the lock's connection lives (ttl is not used). A transaction must stay "
        "within one OVSDB database.",
    )

    def __init__(self, driver: _Driver) -> None:
        self._driver = driver
        self.mapping = driver.mapping
        self.replica = driver.replica
        self.versions = driver.versions
        self.namespace = driver.target.namespace
        self.nb_db = driver.nb_db
        self._closed = False
        self._locks_lock = threading.Lock()
        self._local_locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> OvsdbBackend:
        """Open ``ovsdb+tcp://``, ``ovsdb+ssl://`` or ``ovsdb+unix://`` (see the module docstring)."""
        target = _parse(url, options)
        return cls(_acquire_driver(target))

    def __repr__(self) -> str:
        return f"<OvsdbBackend {self._driver.target.describe()} db={self.nb_db}>"

    def _transact(
        self, db: str, ops: list[dict[str, Any]], on_reply: Callable[[list[Any]], None] | None = None
    ) -> list[Any]:
        if self._closed:
            raise errors.BackendUnavailableError("this OVSDB backend is closed")
        return self._driver.transact(db, ops, on_reply)

    # ---------------------------------------------------------------- locks

    @contextmanager
    def lock(self, name: str, ttl: float, timeout: float | None) -> Iterator[LockHandle]:
        """OVSDB's native lock ``nbdb_<sha256(namespace/name)>``, on a connection of its own to the leader."""
        if ttl <= 0:
            raise errors.ValidationError("lock ttl must be positive")
        # OVSDB lock names are <id>s ([A-Za-z_][A-Za-z0-9_]*).
        lock_name = "nbdb_" + hashlib.sha256(f"{self.namespace}/{name}".encode()).hexdigest()[:40]
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._locks_lock:
            local = self._local_locks.get(lock_name)
            if local is None:
                local = threading.Lock()
                self._local_locks[lock_name] = local
        # One connection may request a lock once: threads of this backend queue here first.
        if not local.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise errors.LockTimeoutError(f"lock {name!r} is held by another owner; gave up after {timeout}s")
        try:
            connect_deadline = time.monotonic() + self._driver.target.timeout
            if deadline is not None:
                connect_deadline = min(connect_deadline, deadline)
            rpc = _leader_rpc(self._driver.target, self.nb_db or DEFAULT_NB, connect_deadline)
            try:
                handle = LockHandle(name, uuid.uuid4().hex)
                result = rpc.call("lock", [lock_name], self._driver.target.timeout)
                if not (isinstance(result, dict) and result.get("locked")):
                    if not self._await_locked(rpc, lock_name, deadline):
                        raise errors.LockTimeoutError(
                            f"lock {name!r} is held by another owner; gave up after {timeout}s"
                        )
                stop = threading.Event()
                watcher = threading.Thread(
                    target=self._watch_lock, args=(rpc, lock_name, handle, stop), name=f"nbdb-lock-{name}", daemon=True
                )
                watcher.start()
                try:
                    yield handle
                finally:
                    stop.set()
                    if not handle.lost:
                        try:
                            rpc.call("unlock", [lock_name], 5.0)
                        except errors.NbdbError:
                            pass
                    watcher.join(5)
            finally:
                rpc.close()
        finally:
            local.release()

    @staticmethod
    def _await_locked(rpc: _Rpc, lock_name: str, deadline: float | None) -> bool:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                msg = rpc.notifications.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                if rpc.closed.is_set():
                    raise errors.BackendUnavailableError("the lock connection closed") from None
                continue
            if msg.get("method") == "locked" and msg.get("params") == [lock_name]:
                return True

    @staticmethod
    def _watch_lock(rpc: _Rpc, lock_name: str, handle: LockHandle, stop: threading.Event) -> None:
        while not stop.is_set():
            if rpc.closed.is_set():
                log.error("lock %r was lost: its OVSDB connection closed", handle.name)
                handle.mark_lost()
                return
            try:
                msg = rpc.notifications.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg.get("method") == "stolen" and msg.get("params") == [lock_name]:
                log.error("lock %r was stolen", handle.name)
                handle.mark_lost()
                return

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _release_driver(self._driver)
