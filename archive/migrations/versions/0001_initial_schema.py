"""Initial schema: tenants, items, holds, audit log, destructions, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=50), nullable=False),
    sa.Column('item_id', sa.Uuid(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('tenant', 'seq', name='uq_audit_seq')
    )
    op.create_index('ix_audit_at', 'audit_events', ['tenant', 'at'], unique=False)
    op.create_index('ix_audit_item', 'audit_events', ['tenant', 'item_id'], unique=False)

    op.create_table('audit_heads',
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('tenant', name=op.f('pk_audit_heads'))
    )
    op.create_table('destructions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('item_id', sa.Uuid(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('retention_basis', sa.JSON(), nullable=True),
    sa.Column('retain_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stored_sha256', sa.String(length=64), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_destructions')),
    sa.UniqueConstraint('item_id', name=op.f('uq_destructions_item_id'))
    )
    op.create_index('ix_destructions_tenant', 'destructions', ['tenant', 'destroyed_at'], unique=False)

    op.create_table('tenants',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants'))
    )
    op.create_table('holds',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('case_ref', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.String(length=2000), nullable=False),
    sa.Column('query', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('placed_by', sa.String(length=100), nullable=False),
    sa.Column('placed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_by', sa.String(length=100), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('release_reason', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name=op.f('fk_holds_tenant_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    op.create_index('ix_holds_case', 'holds', ['tenant', 'case_ref'], unique=False)
    op.create_index('ix_holds_status', 'holds', ['tenant', 'status'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration', sa.Float(), nullable=True),
    sa.Column('direction', sa.String(length=16), nullable=True),
    sa.Column('caller_number', sa.String(length=32), nullable=True),
    sa.Column('called_number', sa.String(length=32), nullable=True),
    sa.Column('agent_id', sa.String(length=100), nullable=True),
    sa.Column('agent_extension', sa.String(length=32), nullable=True),
    sa.Column('service', sa.String(length=100), nullable=True),
    sa.Column('queue', sa.String(length=100), nullable=True),
    sa.Column('customer_name', sa.String(length=200), nullable=True),
    sa.Column('customer_name_key', sa.String(length=200), nullable=True),
    sa.Column('customer_email', sa.String(length=320), nullable=True),
    sa.Column('customer_postcode', sa.String(length=8), nullable=True),
    sa.Column('special_category', sa.Boolean(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('object_key', sa.String(length=300), nullable=True),
    sa.Column('media_type', sa.String(length=100), nullable=True),
    sa.Column('plain_size', sa.BigInteger(), nullable=True),
    sa.Column('stored_size', sa.BigInteger(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('media', sa.JSON(), nullable=True),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=True),
    sa.Column('kek_id', sa.String(length=300), nullable=True),
    sa.Column('retain_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retention_basis', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name=op.f('fk_items_tenant_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items')),
    sa.UniqueConstraint('tenant', 'channel', 'external_id', name='uq_items_external')
    )
    op.create_index('ix_items_agent', 'items', ['tenant', 'agent_id', 'started_at'], unique=False)
    op.create_index('ix_items_called', 'items', ['tenant', 'called_number', 'started_at'], unique=False)
    op.create_index('ix_items_caller', 'items', ['tenant', 'caller_number', 'started_at'], unique=False)
    op.create_index('ix_items_email', 'items', ['tenant', 'customer_email', 'started_at'], unique=False)
    op.create_index('ix_items_expiry', 'items', ['status', 'retain_until'], unique=False)
    op.create_index('ix_items_name', 'items', ['tenant', 'customer_name_key', 'started_at'], unique=False)
    op.create_index('ix_items_postcode', 'items', ['tenant', 'customer_postcode', 'started_at'], unique=False)
    op.create_index('ix_items_tenant_expiry', 'items', ['tenant', 'status', 'retain_until'], unique=False)
    op.create_index('ix_items_tenant_started', 'items', ['tenant', 'started_at'], unique=False)

    op.create_table('tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name=op.f('fk_tokens_tenant_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokens')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_tokens_secret_hash'))
    )
    op.create_table('hold_items',
    sa.Column('hold_id', sa.Uuid(), nullable=False),
    sa.Column('item_id', sa.Uuid(), nullable=False),
    sa.Column('added_by', sa.String(length=100), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hold_id'], ['holds.id'], name=op.f('fk_hold_items_hold_id_holds')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_hold_items_item_id_items')),
    sa.PrimaryKeyConstraint('hold_id', 'item_id', name=op.f('pk_hold_items'))
    )
    op.create_index('ix_hold_items_item', 'hold_items', ['item_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_hold_items_item', table_name='hold_items')

    op.drop_table('hold_items')
    op.drop_table('tokens')
    op.drop_index('ix_items_tenant_started', table_name='items')
    op.drop_index('ix_items_tenant_expiry', table_name='items')
    op.drop_index('ix_items_postcode', table_name='items')
    op.drop_index('ix_items_name', table_name='items')
    op.drop_index('ix_items_expiry', table_name='items')
    op.drop_index('ix_items_email', table_name='items')
    op.drop_index('ix_items_caller', table_name='items')
    op.drop_index('ix_items_called', table_name='items')
    op.drop_index('ix_items_agent', table_name='items')

    op.drop_table('items')
    op.drop_index('ix_holds_status', table_name='holds')
    op.drop_index('ix_holds_case', table_name='holds')

    op.drop_table('holds')
    op.drop_table('tenants')
    op.drop_index('ix_destructions_tenant', table_name='destructions')

    op.drop_table('destructions')
    op.drop_table('audit_heads')
    op.drop_index('ix_audit_item', table_name='audit_events')
    op.drop_index('ix_audit_at', table_name='audit_events')

    op.drop_table('audit_events')
