"""Native database logins over a socket the prober already connected to the pinned address.

Each driver is handed that socket instead of a host to look up, so the egress policy's choice is
where the password goes, and TLS (when the check asks for it) is verified against the original
host name. After the login, the cheapest read proves the session works: `SELECT 1`, `PING`,
the `ping` command. Driver errors are mapped to outcomes by their codes; their messages are
never passed on (a server may echo what it was sent).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import typing

from credbridge.core import egress, verification

Outcome = verification.Outcome
ProbeResult = verification.ProbeResult


def login(
    request: verification.DatabaseProbe,
    sock: socket.socket,
    address: egress.IPAddress,
    context: ssl.SSLContext,
    deadline: float,
    where: str,
) -> ProbeResult:
    """Logs in to the database `request` names over `sock` and runs its cheapest read."""
    timeout = max(0.1, deadline - time.monotonic())
    sock.settimeout(timeout)
    if request.kind == "postgres":
        return _postgres(request, sock, context, timeout, where)
    if request.kind == "mysql":
        return _mysql(request, sock, context, timeout, where)
    if request.kind == "redis":
        return _redis(request, sock, context, timeout, where)
    return _mongodb(request, address, timeout, where)


def _valid(request: verification.DatabaseProbe) -> ProbeResult:
    return ProbeResult(Outcome.VALID, f"logged in to {request.kind} at {request.host} port {request.port}")


def _invalid(request: verification.DatabaseProbe, why: str) -> ProbeResult:
    return ProbeResult(Outcome.INVALID, f"{request.kind} at {request.host} refused the login ({why})")


def _tls_failure(where: str, host: str, error: BaseException) -> ProbeResult | None:
    """An Unreachable result when `error` (or its cause) is a TLS failure, else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return ProbeResult(
                Outcome.UNREACHABLE,
                f"{where} presented a TLS certificate that is not valid for {host} or not trusted: nothing was sent",
            )
        if isinstance(seen, ssl.SSLError):
            return ProbeResult(Outcome.UNREACHABLE, f"TLS with {where} failed")
        seen = seen.__cause__ or seen.__context__
    return None


def _network_failure(where: str, host: str, error: BaseException) -> ProbeResult:
    return _tls_failure(where, host, error) or ProbeResult(
        Outcome.UNREACHABLE, f"{where} did not complete the login ({type(error).__name__})"
    )


_POSTGRES_INVALID = {"28P01": "wrong password", "28000": "no such user or not allowed to connect from here"}
_POSTGRES_FORBIDDEN = {"42501": "the user lacks a privilege", "3D000": "the database does not exist"}


def _postgres(
    request: verification.DatabaseProbe, sock: socket.socket, context: ssl.SSLContext, timeout: float, where: str
) -> ProbeResult:
    import pg8000.exceptions
    import pg8000.native

    try:
        connection = pg8000.native.Connection(
            request.user.reveal(),
            host=request.host,
            port=request.port,
            database=request.database,
            password=request.password.reveal(),
            sock=sock,
            ssl_context=context if request.tls else False,
            timeout=timeout,
            application_name="credbridge-verify",
        )
    except pg8000.exceptions.DatabaseError as error:
        details = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
        code = str(details.get("C", ""))
        if code in _POSTGRES_INVALID:
            return _invalid(request, _POSTGRES_INVALID[code])
        if code in _POSTGRES_FORBIDDEN:
            return ProbeResult(Outcome.FORBIDDEN, f"postgres at {request.host}: {_POSTGRES_FORBIDDEN[code]}")
        return ProbeResult(Outcome.UNREACHABLE, f"postgres at {where} failed the login (SQLSTATE {code or 'unknown'})")
    except (pg8000.exceptions.InterfaceError, OSError) as error:
        return _network_failure(where, request.host, error)
    try:
        connection.run("SELECT 1")
    except (pg8000.exceptions.DatabaseError, pg8000.exceptions.InterfaceError, OSError) as error:
        return _network_failure(where, request.host, error)
    finally:
        with contextlib.suppress(pg8000.exceptions.InterfaceError, OSError):
            connection.close()
    return _valid(request)


_MYSQL_INVALID = {1045: "wrong user name or password", 1698: "the user may not log in with a password"}
_MYSQL_FORBIDDEN = {1044: "the user may not use the database", 1049: "the database does not exist"}


def _mysql(
    request: verification.DatabaseProbe, sock: socket.socket, context: ssl.SSLContext, timeout: float, where: str
) -> ProbeResult:
    import pymysql
    import pymysql.err

    connection = pymysql.connections.Connection(
        host=request.host,
        port=request.port,
        user=request.user.reveal(),
        password=request.password.reveal(),
        database=request.database,
        ssl=context if request.tls else None,
        ssl_disabled=not request.tls,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        defer_connect=True,
    )
    try:
        connection.connect(sock)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except pymysql.err.OperationalError as error:
        code = error.args[0] if error.args and isinstance(error.args[0], int) else 0
        if code in _MYSQL_INVALID:
            return _invalid(request, _MYSQL_INVALID[code])
        if code in _MYSQL_FORBIDDEN:
            return ProbeResult(Outcome.FORBIDDEN, f"mysql at {request.host}: {_MYSQL_FORBIDDEN[code]}")
        return _network_failure(where, request.host, error)
    except (pymysql.err.MySQLError, OSError) as error:
        return _network_failure(where, request.host, error)
    finally:
        with contextlib.suppress(pymysql.err.Error, OSError):
            connection.close()
    return _valid(request)


def _redis(
    request: verification.DatabaseProbe, sock: socket.socket, context: ssl.SSLContext, timeout: float, where: str
) -> ProbeResult:
    import redis.backoff
    import redis.connection
    import redis.exceptions
    import redis.retry

    try:
        connected = context.wrap_socket(sock, server_hostname=request.host) if request.tls else sock
    except ssl.SSLError as error:
        return _network_failure(where, request.host, error)

    class PinnedConnection(redis.connection.Connection):
        """A redis-py connection over the socket the prober opened (no lookup, no reconnect)."""

        def _connect(self) -> socket.socket:
            return connected

    connection = PinnedConnection(  # type: ignore[no-untyped-call]
        host=request.host,
        port=request.port,
        username=request.user.reveal() or None,
        password=request.password.reveal() or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        client_name="credbridge-verify",
    )
    try:
        connection.connect()  # type: ignore[no-untyped-call]
        connection.send_command("PING")  # type: ignore[no-untyped-call]
        answer = connection.read_response()
    except (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return _invalid(request, "wrong user name or password")
    except redis.exceptions.ResponseError as error:
        text = str(error).upper()
        if "NOAUTH" in text or "WRONGPASS" in text or "AUTH" in text:
            return _invalid(request, "wrong or missing password")
        if "NOPERM" in text:
            return ProbeResult(Outcome.FORBIDDEN, f"redis at {request.host}: the user may not run PING")
        return ProbeResult(Outcome.UNREACHABLE, f"redis at {where} answered an error")
    except (redis.exceptions.RedisError, OSError) as error:
        return _network_failure(where, request.host, error)
    finally:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            connection.disconnect()  # type: ignore[no-untyped-call]
    if answer not in (b"PONG", "PONG", True):
        return ProbeResult(Outcome.UNREACHABLE, f"redis at {where} did not answer PING")
    return _valid(request)


def _mongodb(request: verification.DatabaseProbe, address: egress.IPAddress, timeout: float, where: str) -> ProbeResult:
    # pymongo opens its own sockets and cannot be handed one, so it is given the pinned address
    # itself (no lookup happens) and `directConnection`, so it never goes on to replica-set
    # members a server names. It then cannot check a certificate against the host name: TLS
    # MongoDB checks are refused rather than run with a weaker check.
    import pymongo
    import pymongo.errors

    if request.tls:
        return ProbeResult(
            Outcome.NOT_VERIFIABLE,
            "MongoDB over TLS is not verified yet: the driver cannot be made to connect to the address the egress "
            "policy pinned while checking the certificate against the host name",
        )
    client: pymongo.MongoClient[dict[str, typing.Any]] = pymongo.MongoClient(
        host=f"[{address}]" if address.version == 6 else str(address),
        port=request.port,
        username=request.user.reveal() or None,
        password=request.password.reveal() or None,
        authSource=request.auth_source or request.database or "admin",
        directConnection=True,
        connect=False,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000),
        socketTimeoutMS=int(timeout * 1000),
        appname="credbridge-verify",
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.OperationFailure as error:
        if error.code in (18, 11):  # AuthenticationFailed, UserNotFound
            return _invalid(request, "wrong user name or password")
        if error.code == 13:  # Unauthorized
            return ProbeResult(Outcome.FORBIDDEN, f"mongodb at {request.host}: the user lacks a privilege")
        return ProbeResult(Outcome.UNREACHABLE, f"mongodb at {where} answered an error (code {error.code})")
    except pymongo.errors.PyMongoError as error:
        return _network_failure(where, request.host, error)
    finally:
        client.close()
    return _valid(request)
