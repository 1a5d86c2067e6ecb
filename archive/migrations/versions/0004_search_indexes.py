"""Search: the tenant's newest-first index also holds status and id, so that a search pages
through it alone (status is always a filter; the id breaks ties between equal started_at).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_items_tenant_status_started', 'items',
                    ['tenant', 'status', 'started_at', 'id'], unique=False)
    op.drop_index('ix_items_tenant_started', table_name='items')


def downgrade() -> None:
    op.create_index('ix_items_tenant_started', 'items', ['tenant', 'started_at'], unique=False)
    op.drop_index('ix_items_tenant_status_started', table_name='items')
