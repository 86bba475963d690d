"""`retention coverage`: personal-looking columns no dataset reaches, never a value printed (issue 27)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from click.testing import CliRunner
from test_schemas import create_schema, load_rows

from retention.cli import main
from retention.demo.shop import build_shop
from retention.engine.coverage import name_kinds, value_kinds

MARKETPLACE = "builtin:marketplace"
WOOCOMMERCE = "builtin:woocommerce-nl"


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["coverage", *args])
    return result.exit_code, result.output


def _values(engine: sa.Engine, table: str, *columns: str) -> list[str]:
    """Every non-empty value of the columns: none of them may appear in the report."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*(sa.column(c) for c in columns)).select_from(sa.table(table))).all()
    return [str(v) for row in rows for v in row if v not in (None, "")]


def test_names_orders_on_the_demo_shop_and_strict_fails(engine: sa.Engine, db_url: str) -> None:
    """orders is in no dataset of the marketplace pack: its customer_id is reported with customers as home."""
    build_shop(engine, customers=40)
    code, out = _invoke("--rules", MARKETPLACE, "--db", db_url)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "not covered:"
    assert lines[1] == (
        "  orders.customer_id (reference to a person): not covered; suggested dataset: customers "
        "(foreign key orders.customer_id -> customers.id)"
    )
    assert lines[2] == "covered:"
    assert "  customers.email (e-mail address): covered by customers (mask)" in lines
    assert "  review_access_logs.ip (IP address): covered by review_access_logs (purge)" in lines
    assert lines[-1] == (
        "1 personal column(s) in 1 table(s) not covered by pack marketplace; 0 partly covered, 13 covered "
        "(7 tables scanned)"
    )
    values = _values(engine, "customers", "email", "name", "phone", "postcode")
    values += _values(engine, "review_access_logs", "ip", "user_agent")
    assert values and not [v for v in values if v in out]

    code, out = _invoke("--rules", MARKETPLACE, "--db", db_url, "--strict", "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert [(c["table"], c["column"], c["kinds"], c["suggestion"]["dataset"]) for c in report["uncovered"]] == [
        ("orders", "customer_id", ["person_reference"], "customers")
    ]
    assert report["uncovered"][0]["evidence"] == ["name", "foreign_key"]


def test_strict_passes_once_every_personal_column_is_reached(engine: sa.Engine, db_url: str) -> None:
    """Without the orders table nothing is left uncovered, so --strict exits 0."""
    build_shop(engine, customers=20)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE invoices"))
        conn.execute(sa.text("DROP TABLE orders"))
    code, out = _invoke("--rules", MARKETPLACE, "--db", db_url, "--strict")
    assert code == 0, out
    assert out.splitlines()[-1].startswith("0 personal column(s) in 0 table(s) not covered by pack marketplace")


def test_woocommerce_schema_with_the_reference_pack(engine: sa.Engine, db_url: str) -> None:
    """On WordPress + WooCommerce tables the gaps of woocommerce-nl are found and given a home."""
    create_schema(engine, "woocommerce")
    load_rows(engine, "woocommerce")
    code, out = _invoke("--rules", WOOCOMMERCE, "--db", db_url, "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    uncovered = {(c["table"], c["column"]): c for c in report["uncovered"]}
    username = uncovered[("wp_wc_customer_lookup", "username")]
    assert username["suggestion"]["dataset"] == "customers"
    assert ("wp_comments", "comment_content") in uncovered  # free text beside the author's address
    assert uncovered[("wp_comments", "comment_content")]["kinds"] == ["free_text"]
    partly = {(c["table"], c["column"]) for c in report["partly_covered"]}
    # Reviews are one comment_type among others: blog comments keep the author's address.
    assert ("wp_comments", "comment_author_email") in partly
    assert ("wp_users", "user_email") in partly  # administrators are excluded by the pack's where
    covered = {(c["table"], c["column"]) for c in report["covered"]}
    # The pack retains wp_wc_orders with its order since issue 23 (dataset order_records): its address is reached.
    assert ("wp_wc_orders", "billing_email") in covered
    assert ("wp_wc_customer_lookup", "email") in covered
    assert ("wp_wc_customer_lookup", "first_name") in covered
    assert not [k for k in uncovered if k[0] in ("wp_woocommerce_sessions", "wp_usermeta")]
    values = _values(engine, "wp_wc_orders", "billing_email") + _values(engine, "wp_comments", "comment_author_email")
    assert values and not [v for v in values if v in out]

    code, _ = _invoke("--rules", WOOCOMMERCE, "--db", db_url, "--strict")
    assert code == 1


def test_values_reveal_a_column_its_name_hides(engine: sa.Engine, db_url: str) -> None:
    """A column named `contact` holding e-mail addresses is found from a sample of its values."""
    build_shop(engine, customers=10)
    md = sa.MetaData()
    leads = sa.Table(
        "leads",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("contact", sa.String(200)),
        sa.Column("origin", sa.String(45)),
        sa.Column("campaign", sa.String(40)),
        sa.Column("remarks", sa.Text),
    )
    md.create_all(engine)
    rows = [
        {
            "id": n,
            "contact": f"lead{n}@example.test",
            "origin": f"198.51.100.{n}",
            "campaign": f"spring-{n % 3}",
            "remarks": f"called back {n}",
        }
        for n in range(1, 30)
    ]
    with engine.begin() as conn:
        conn.execute(leads.insert(), rows)
    code, out = _invoke("--rules", MARKETPLACE, "--db", db_url, "--format", "json")
    assert code == 0, out
    found = {(c["table"], c["column"]): c for c in json.loads(out)["uncovered"]}
    assert found[("leads", "contact")]["kinds"] == ["email"]
    assert found[("leads", "contact")]["evidence"] == ["values"]
    assert found[("leads", "origin")]["kinds"] == ["ip_address"]
    assert found[("leads", "remarks")]["kinds"] == ["free_text"]
    assert ("leads", "campaign") not in found
    assert found[("leads", "contact")]["suggestion"] is None  # no key, no chain: no home to guess
    assert "lead1@example.test" not in out and "198.51.100.1" not in out


def test_a_table_without_personal_columns_is_not_reported(engine: sa.Engine, db_url: str) -> None:
    """A product catalogue with a `name` column is not personal data on its own."""
    build_shop(engine, customers=5)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (id INTEGER PRIMARY KEY, name VARCHAR(100), note TEXT)"))
        conn.execute(sa.text("INSERT INTO products (id, name, note) VALUES (1, 'Lamp', 'blue')"))
    code, out = _invoke("--rules", MARKETPLACE, "--db", db_url)
    assert code == 0, out
    assert "products" not in out


def test_unknown_pack_is_one_line_exit_2(engine: sa.Engine, db_url: str) -> None:
    """A bad --rules value is a configuration error, not a traceback."""
    code, out = _invoke("--rules", "builtin:nope", "--db", db_url)
    assert code == 2
    assert "Traceback" not in out


def test_name_and_value_patterns() -> None:
    """Column names and value samples map to the kinds a DPO asks about; look-alikes do not."""
    assert name_kinds("comment_author_IP") == ["ip_address"]
    assert name_kinds("billing_email") == ["email"]
    assert name_kinds("zip") == ["postcode"]
    assert name_kinds("shipping_total") == []
    assert name_kinds("customer_id") == ["person_reference"]
    assert value_kinds(["+33 6 12345678", "06 12 34 56 78", None]) == ["phone"]
    assert value_kinds(["NL91ABNA0417164300", "DE89 3704 0044 0532 0130 00"]) == ["iban"]
    assert value_kinds(["2001:db8::1", "10.0.0.1"]) == ["ip_address"]
    assert value_kinds(["12:30", "wc-completed", "20240101"]) == []
