"""the Google OAuth client for Gmail and Workspace mailboxes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00

One row (id 1), like `app_registration` for Microsoft: the client ID and the client secret encrypted
with the vault. Google mailboxes themselves need no new column: `accounts.provider` is 'google',
`token_subject` the ID token's `sub`, `tenant_id` its `hd` (the Workspace domain, empty for a
consumer Gmail account), `token_cache_enc` the encrypted token JSON.

Numbered 0009 (0010 is taken by work merged alongside); it follows main's newest revision,
0011, so this branch has one head; the chain is set again when those branches meet this one.
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'google_app_registration',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=255), nullable=False),
        sa.Column('client_secret_enc', sa.LargeBinary(), nullable=True),
        sa.Column('secret_set_at', sa.DateTime(), nullable=True),
        sa.Column('verified_at', sa.DateTime(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('updated_by', sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('google_app_registration')
