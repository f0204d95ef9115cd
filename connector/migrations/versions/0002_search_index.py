"""search index for the ticket list (SQLite FTS5, trigram)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:00:00

`GET /api/v1/tickets?q=` searches a ticket's subject, customer address and name, and the subject
and text of its articles. Without an index that is a scan of every article's text (hundreds of MB
with a large history). On SQLite this adds two FTS5 tables:

- `tickets_fts(subject, customer_address, customer_name)`, external content `tickets`, with the
  trigram tokenizer: any part of these short fields matches (3 characters or more), as `ILIKE` did;
- `articles_fts(subject, body_text)`, external content `articles`, rowid = articles.id, with the
  unicode61 tokenizer (diacritics folded): the words of the query match as a phrase, the last one as
  a prefix ("XK-17", "invoice 2026", "refun" for "refund"). A trigram index of mail text was measured
  at 25 times the CPU (12.6 s against 0.5 s for 10,000 corpus mails): it would halve the import rate,
  so article text is searched by words, not by any part of a word.

Triggers keep them in step with every write (mail ingest, outgoing replies, deletes), so no code
path can forget it. Existing rows are indexed here ('rebuild').

PostgreSQL gets nothing from this revision: there the same queries stay `ILIKE '%...%'`, and what
would make them fast is the pg_trgm extension with GIN indexes
(`CREATE EXTENSION pg_trgm; CREATE INDEX ... USING gin (body_text gin_trgm_ops)` on
articles.body_text and articles.subject, and on tickets.subject, customer_address, customer_name),
which `ILIKE` uses as it is. Creating an extension needs privileges an application role often lacks,
so it is left to the operator (see README) rather than done here.
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

SQLITE_UP = [
    "CREATE VIRTUAL TABLE articles_fts USING fts5(subject, body_text, content='articles', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE tickets_fts USING fts5(subject, customer_address, customer_name, content='tickets', "
    "content_rowid='id', tokenize='trigram')",
    """CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
        INSERT INTO articles_fts(rowid, subject, body_text) VALUES (new.id, new.subject, new.body_text);
    END""",
    """CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
        INSERT INTO articles_fts(articles_fts, rowid, subject, body_text)
        VALUES ('delete', old.id, old.subject, old.body_text);
    END""",
    """CREATE TRIGGER articles_fts_update AFTER UPDATE OF subject, body_text ON articles BEGIN
        INSERT INTO articles_fts(articles_fts, rowid, subject, body_text)
        VALUES ('delete', old.id, old.subject, old.body_text);
        INSERT INTO articles_fts(rowid, subject, body_text) VALUES (new.id, new.subject, new.body_text);
    END""",
    """CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN
        INSERT INTO tickets_fts(rowid, subject, customer_address, customer_name)
        VALUES (new.id, new.subject, new.customer_address, new.customer_name);
    END""",
    """CREATE TRIGGER tickets_fts_delete AFTER DELETE ON tickets BEGIN
        INSERT INTO tickets_fts(tickets_fts, rowid, subject, customer_address, customer_name)
        VALUES ('delete', old.id, old.subject, old.customer_address, old.customer_name);
    END""",
    """CREATE TRIGGER tickets_fts_update AFTER UPDATE OF subject, customer_address, customer_name ON tickets BEGIN
        INSERT INTO tickets_fts(tickets_fts, rowid, subject, customer_address, customer_name)
        VALUES ('delete', old.id, old.subject, old.customer_address, old.customer_name);
        INSERT INTO tickets_fts(rowid, subject, customer_address, customer_name)
        VALUES (new.id, new.subject, new.customer_address, new.customer_name);
    END""",
    "INSERT INTO articles_fts(articles_fts) VALUES ('rebuild')",
    "INSERT INTO tickets_fts(tickets_fts) VALUES ('rebuild')",
]

SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS articles_fts_insert", "DROP TRIGGER IF EXISTS articles_fts_delete",
    "DROP TRIGGER IF EXISTS articles_fts_update", "DROP TRIGGER IF EXISTS tickets_fts_insert",
    "DROP TRIGGER IF EXISTS tickets_fts_delete", "DROP TRIGGER IF EXISTS tickets_fts_update",
    "DROP TABLE IF EXISTS articles_fts", "DROP TABLE IF EXISTS tickets_fts",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
