"""Holds and lifecycle: versioned retention policies, the object-deletion queue, whether an
item's objects carry the store's legal hold, and whether the item is held (with a partial index
of held items for searches).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'policies',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('days', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('set_by', sa.String(length=100), nullable=False),
        sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name='fk_policies_tenant_tenants'),
        sa.PrimaryKeyConstraint('id', name='pk_policies'),
        sa.UniqueConstraint('tenant', 'channel', 'version', name='uq_policies_version'),
    )
    op.create_table(
        'object_deletions',
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name='pk_object_deletions'),
    )
    op.add_column('items', sa.Column('object_lock', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.add_column('items', sa.Column('held', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.execute("UPDATE items SET held = EXISTS (SELECT 1 FROM hold_items JOIN holds "
               "ON holds.id = hold_items.hold_id WHERE hold_items.item_id = items.id "
               "AND holds.status = 'active')")
    op.create_index('ix_items_object_lock', 'items', ['id'], unique=False,
                    postgresql_where=sa.text('object_lock'),
                    sqlite_where=sa.text('object_lock'))
    # An item-list hold's query is SQL NULL (the live-hold lookup skips those); earlier
    # versions wrote the JSON value null.
    op.execute("UPDATE holds SET query = NULL WHERE CAST(query AS TEXT) = 'null'")
    op.create_index('ix_items_held', 'items', ['tenant', 'status', 'started_at', 'id'],
                    unique=False, postgresql_where=sa.text('held'),
                    sqlite_where=sa.text('held'))


def downgrade() -> None:
    op.drop_index('ix_items_held', table_name='items')
    op.drop_index('ix_items_object_lock', table_name='items')
    op.drop_column('items', 'held')
    op.drop_column('items', 'object_lock')
    op.drop_table('object_deletions')
    op.drop_table('policies')
