"""Microsoft Graph change-notification subscriptions per mailbox, and the news their notifications leave;
`app_settings` (key/value) for what admins set on the pages, such as the default transport of new mailboxes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00

Numbered 0010 because 0009 is reserved for work not merged yet; it follows 0011, main's head at the last
merge (0007 -> 0008 -> 0011 -> 0010): when 0009 is merged, one of the two must revise the other (the
tables here depend only on `accounts`).
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('graph_subscriptions',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('account_id', sa.Integer(), nullable=False),
                    sa.Column('subscription_id', sa.String(length=128), nullable=True),
                    sa.Column('resource', sa.String(length=512), nullable=False),
                    sa.Column('client_state_hash', sa.String(length=64), nullable=False),
                    sa.Column('expires_at', sa.DateTime(), nullable=True),
                    sa.Column('created_at', sa.DateTime(), nullable=False),
                    sa.Column('renewed_at', sa.DateTime(), nullable=True),
                    sa.Column('news_at', sa.DateTime(), nullable=True),
                    sa.Column('lifecycle_event', sa.String(length=40), nullable=True),
                    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
                    sa.Column('last_error', sa.Text(), nullable=True),
                    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('account_id'),
                    sa.UniqueConstraint('subscription_id'))
    with op.batch_alter_table('graph_subscriptions') as batch:
        batch.create_index(batch.f('ix_graph_subscriptions_news_at'), ['news_at'], unique=False)
    op.create_table('app_settings',
                    sa.Column('key', sa.String(length=64), nullable=False),
                    sa.Column('value', sa.Text(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(), nullable=False),
                    sa.Column('updated_by', sa.String(length=320), nullable=True),
                    sa.PrimaryKeyConstraint('key'))


def downgrade() -> None:
    op.drop_table('app_settings')
    with op.batch_alter_table('graph_subscriptions') as batch:
        batch.drop_index(batch.f('ix_graph_subscriptions_news_at'))
    op.drop_table('graph_subscriptions')
