"""Reading credential rows straight from a Flowise database (PostgreSQL), for migration.

Flowise's REST API never returns password fields, so moving credentials out of a Flowise with
their values means reading its `credential` table and decrypting `encryptedData` with its key
(core.flowise.stored). This module only reads: it runs one SELECT and closes the connection.
The driver is pg8000 (pure Python; the `flowise` extra installs it).
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from credbridge.core import redaction


class DatabaseError(Exception):
    """The database could not be read; the message names the database and the fix, never a password."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of Flowise's `credential` table."""

    id: str
    name: str
    credential_name: str
    encrypted_data: str = dataclasses.field(repr=False)
    workspace_id: str | None


@dataclasses.dataclass(frozen=True)
class DatabaseAddress:
    """Where a Flowise PostgreSQL database is; the password is kept apart from the URL."""

    host: str
    port: int
    user: str
    database: str
    password: redaction.Redacted | None

    @classmethod
    def from_url(cls, url: str, password: redaction.Redacted | None) -> DatabaseAddress:
        """Parses `postgresql://USER@HOST:PORT/DATABASE` (a password in the URL is used, but prefer PGPASSWORD)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.path.strip("/"):
            raise DatabaseError(
                "the database URL must look like postgresql://USER@HOST:PORT/DATABASE (the password in "
                "PGPASSWORD or --database-password-file)"
            )
        if parts.password:
            password = redaction.Redacted(urllib.parse.unquote(parts.password))
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            user=urllib.parse.unquote(parts.username or "postgres"),
            database=parts.path.strip("/"),
            password=password,
        )

    def __str__(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def read_credentials(address: DatabaseAddress, *, timeout: float = 30.0) -> list[Row]:
    """Every row of Flowise's `credential` table."""
    try:
        import pg8000.dbapi  # optional dependency (the `flowise` extra): only this command needs it
    except ImportError:
        raise DatabaseError(
            "reading a Flowise database needs the pg8000 driver: pip install 'credbridge[flowise]'"
        ) from None
    try:
        connection = pg8000.dbapi.connect(
            user=address.user,
            host=address.host,
            port=address.port,
            database=address.database,
            password=address.password.reveal() if address.password else None,
            timeout=timeout,
        )
    except pg8000.dbapi.Error as error:
        raise DatabaseError(f"cannot connect to {address}: {_reason(error)}") from None
    except OSError as error:
        raise DatabaseError(f"cannot connect to {address}: {error.strerror or type(error).__name__}") from None
    try:
        cursor = connection.cursor()
        cursor.execute('SELECT id, name, "credentialName", "encryptedData", "workspaceId" FROM credential ORDER BY id')
        rows = [
            Row(str(row[0]), str(row[1] or ""), str(row[2] or ""), str(row[3] or ""), str(row[4]) if row[4] else None)
            for row in cursor.fetchall()
        ]
    except pg8000.dbapi.Error as error:
        raise DatabaseError(
            f"cannot read Flowise's credential table in {address}: {_reason(error)} (is this a Flowise database?)"
        ) from None
    finally:
        connection.close()
    return rows


def _reason(error: Exception) -> str:
    """The server's message from a pg8000 error (its first argument is a dict with key M)."""
    detail = error.args[0] if error.args else None
    if isinstance(detail, dict):
        return str(detail.get("M") or detail.get("C") or type(error).__name__)
    return type(error).__name__
