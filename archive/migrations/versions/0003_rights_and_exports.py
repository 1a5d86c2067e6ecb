"""Retrieval and data-subject rights: item versions (rectification) and exports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'item_versions',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('item_id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('fields', sa.JSON(), nullable=False),
        sa.Column('reason', sa.String(length=2000), nullable=True),
        sa.Column('replaced_by', sa.String(length=100), nullable=True),
        sa.Column('replaced_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'],
                                name='fk_item_versions_item_id_items'),
        sa.PrimaryKeyConstraint('id', name='pk_item_versions'),
        sa.UniqueConstraint('item_id', 'version', name='uq_item_versions'),
    )
    op.create_table(
        'exports',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('purpose', sa.String(length=2000), nullable=False),
        sa.Column('case_ref', sa.String(length=100), nullable=True),
        sa.Column('query', sa.JSON(), nullable=True),
        sa.Column('item_ids', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name='fk_exports_tenant_tenants'),
        sa.PrimaryKeyConstraint('id', name='pk_exports'),
    )
    op.create_index('ix_exports_tenant', 'exports', ['tenant', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_exports_tenant', table_name='exports')
    op.drop_table('exports')
    op.drop_table('item_versions')
