"""what a mail shows, in order: articles.display

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:00:00

`display` holds the display model of an incoming mail (connector/mail/display.py): its text, HTML,
images, forwarded mails and attachments in the order a mail client shows them, as JSON that points
into `body_text` and `body_html` (so no text is stored twice). Articles stored before this revision
have none; opening one re-reads it from its stored raw mail (connector/extract.py), so old mail shows
by the same rules without a long migration.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('articles', sa.Column('display', sa.Text(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch copy of the table would drop the FTS triggers of revision 0002.
        op.execute("ALTER TABLE articles DROP COLUMN display")
    else:
        op.drop_column('articles', 'display')
