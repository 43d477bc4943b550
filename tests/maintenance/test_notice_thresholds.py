"""The allowance notices' percents come from the catalog (`allowance_notices`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.core.catalog import DEFAULT_CATALOG, CatalogFile, apply_catalog, load_catalog, to_document
from tests.maintenance.helpers import drain
from tests.maintenance.test_holds_guests_notices import notices, use


@pytest.fixture
def percents(ledger):
    """Sets the notice percents for one test; the shipped ones are put back after."""

    def set_percents(values: list[int]) -> dict:
        return ledger.rpc("creditgate_apply_settings", {"allowance_notices": values})

    yield set_percents
    ledger.rpc("creditgate_apply_settings", {})


class TestNoticePercents:
    def test_are_the_configured_ones(self, ledger, make_account, sql, percents):
        drain(ledger)
        assert percents([100, 80])["allowance_notices"] == [80, 100]
        account = make_account("free")  # 100 credits of allowance

        use(ledger, account, 390, "n1")  # 78 credits
        ledger.run_maintenance({})
        assert notices(sql, account) == []  # 75 is not one of them any more

        use(ledger, account, 15, "n2")  # 81
        ledger.run_maintenance({})
        assert notices(sql, account) == ["credits:allowance_80"]

        use(ledger, account, 100, "n3")  # 101
        ledger.run_maintenance({})
        assert notices(sql, account) == ["credits:allowance_100", "credits:allowance_80"]

    def test_none_records_no_allowance_notice(self, ledger, make_account, sql, percents):
        drain(ledger)
        percents([])
        account = make_account("free")
        use(ledger, account, 500, "n4")  # the whole allowance
        ledger.run_maintenance({})
        assert [n for n in notices(sql, account) if "allowance" in n] == []

    def test_without_the_setting_are_75_90_100(self, ledger):
        assert ledger.rpc("creditgate_apply_settings", {})["allowance_notices"] == [75, 90, 100]


class TestCatalogSetting:
    def test_the_shipped_catalog_keeps_75_90_100(self):
        assert to_document(load_catalog())["settings"]["allowance_notices"] == [75, 90, 100]

    @pytest.mark.parametrize("bad", [[0], [101], [-5], ["80"], [80.0], 80])
    def test_percents_outside_1_to_100_are_refused(self, bad):
        document = load_catalog().model_dump()
        document["settings"]["allowance_notices"] = bad
        with pytest.raises(ValidationError):
            CatalogFile.model_validate(document)

    def test_apply_sets_them(self, ledger, tmp_path, sql):
        edited = DEFAULT_CATALOG.read_text().replace(
            "allowance_notices = [75, 90, 100]", "allowance_notices = [90, 50, 90]"
        )
        assert "[90, 50, 90]" in edited
        (tmp_path / "catalog.toml").write_text(edited)
        test_plans = [r[0] for r in sql("SELECT id FROM creditgate.plans WHERE id LIKE 'test\\_%%' AND active")]
        try:
            apply_catalog(ledger, tmp_path / "catalog.toml")
            assert sql("SELECT allowance_notice_percents FROM creditgate.settings") == [([50, 90],)]
        finally:
            apply_catalog(ledger)
            # Applying a catalog retires plans it does not list: the suite's own test plans.
            sql("UPDATE creditgate.plans SET active = true WHERE id = ANY(%s)", test_plans)
        assert sql("SELECT allowance_notice_percents FROM creditgate.settings") == [([75, 90, 100],)]
