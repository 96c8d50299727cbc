"""``PrincipalStore``'s storage contract, on SQLite and PostgreSQL: only token hashes are
kept, each principal row is vouched for by its record (the token tests are in
``tests/security/test_tokens.py``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from remsguard.adapters.storage import AuditLog, PrincipalRole, make_engine, verify_log
from remsguard.adapters.storage.principals import PrincipalStore

from .backends import Backend, PostgresBackend, SQLiteBackend


class PrincipalStoreContract(Backend):
    @pytest.fixture
    def principals(self, audit: AuditLog) -> PrincipalStore:
        return PrincipalStore(audit)

    def test_principals_store_only_token_hashes(self, principals: PrincipalStore) -> None:
        principal, token = principals.create_row("aud", PrincipalRole.AUDITOR, ["clinic-1"])
        assert token not in principal.token_hash
        found = principals.row_for_token(token)
        assert found is not None and found.name == "aud" and found.clinics == '["clinic-1"]'
        assert principals.row_for_token(token + "x") is None
        assert verify_log(principals.log.engine).ok

    def test_device_principals_are_a_storage_role(self, principals: PrincipalStore) -> None:
        """Embedded mode's device tokens go through the same principal rows."""
        principal, token = principals.create_row("chair-1", PrincipalRole.DEVICE, ["clinic-1"])
        assert principal.role == "device"
        found = principals.row_for_token(token)
        assert found is not None and PrincipalRole(found.role) is PrincipalRole.DEVICE
        assert found.clinics == '["clinic-1"]' and token not in found.token_hash

    def test_created_rotated_and_revoked_principals_stay_vouched_for(
        self, principals: PrincipalStore
    ) -> None:
        info, token = principals.create("rn", PrincipalRole.STAFF, ["clinic-1"], by="admin")
        assert principals.for_token(token) == info
        _, rotated = principals.rotate("rn", by="admin")
        assert principals.for_token(token) is None and principals.for_token(rotated) is not None
        principals.revoke("rn", by="admin")
        assert principals.for_token(rotated) is None
        assert principals.row_for_token(rotated) is None
        assert verify_log(principals.log.engine).ok

    def test_a_token_lookup_reads_the_row_as_the_listing_does(
        self, principals: PrincipalStore
    ) -> None:
        """`for_token` reads through `db.OneRow` (SQLite: the driver, each column through its
        type's result processor); it gives what the ORM listing gives, times and all."""
        expires = datetime.now(UTC).replace(microsecond=123456) + timedelta(days=3)
        info, token = principals.create(
            "rn", PrincipalRole.STAFF, ["clinic-2", "clinic-1"], expires_at=expires, by="admin"
        )
        found = principals.for_token(token)
        [listed] = principals.listing()
        assert found == info == listed
        assert found.expires_at == expires and found.expires_at.tzinfo is not None
        assert found.clinics == ("clinic-1", "clinic-2")
        assert principals.for_token("rg_" + "x" * 43) is None

    def test_a_change_made_elsewhere_holds_from_the_next_lookup_in_every_thread(
        self, principals: PrincipalStore
    ) -> None:
        """Another process (here another engine on the same database) rotates and revokes:
        the next lookup sees it, in the thread that looked up first (on SQLite it keeps a
        connection of its own) and in any other (a pooled one)."""
        info, token = principals.create("rn", PrincipalRole.STAFF, ["clinic-1"], by="admin")
        elsewhere_engine = make_engine(self.url())
        elsewhere = PrincipalStore(AuditLog(elsewhere_engine))
        try:
            in_thread = lambda t: ThreadPoolExecutor(1).submit(principals.for_token, t).result()  # noqa: E731
            assert principals.for_token(token) == info == in_thread(token)
            _, rotated = elsewhere.rotate("rn", by="admin")
            assert principals.for_token(token) is None and in_thread(token) is None
            assert principals.for_token(rotated) is not None
            assert in_thread(rotated) == principals.for_token(rotated)
            elsewhere.revoke("rn", by="admin")
            assert principals.for_token(rotated) is None and in_thread(rotated) is None
        finally:
            elsewhere.close()
            elsewhere_engine.dispose()
            principals.close()


class TestSQLite(SQLiteBackend, PrincipalStoreContract):
    pass


@pytest.mark.postgres
class TestPostgres(PostgresBackend, PrincipalStoreContract):
    pass
