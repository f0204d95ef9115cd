"""articles whose body and attachments are still to be extracted from the raw mail

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:00:00

A first import of a big mailbox stores each mail's raw bytes and the headers that make it a ticket
(dedup, threading, customer, subject), and leaves decoding the body and the attachments to a later
step: that is what brings the import near the raw fetch rate. `body_pending` marks those articles;
the worker extracts them in the background, and reading the article (ticket page, API) extracts it
on the spot. The partial index keeps "what is still pending" a lookup of the few pending rows.
Existing rows were fully parsed when imported, hence the default false.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('articles', sa.Column('body_pending', sa.Boolean(), nullable=False, server_default=sa.false()))
    # SQLite uses a partial index only for a query with this very term (bodies.py asks `body_pending = 1`).
    op.create_index('ix_articles_body_pending', 'articles', ['id'], unique=False,
                    sqlite_where=sa.text('body_pending = 1'), postgresql_where=sa.text('body_pending'))


def downgrade() -> None:
    op.drop_index('ix_articles_body_pending', table_name='articles')
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch copy of the table would drop the FTS triggers of revision 0002.
        op.execute("ALTER TABLE articles DROP COLUMN body_pending")
    else:
        op.drop_column('articles', 'body_pending')
