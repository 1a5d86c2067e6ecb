"""Ingest: the tenant's media policy; item source hash, content hash and further objects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('items', sa.Column('objects', sa.JSON(), nullable=True))
    op.add_column('items', sa.Column('source_sha256', sa.String(length=64), nullable=True))
    op.add_column('items', sa.Column('source_size', sa.BigInteger(), nullable=True))
    op.add_column('items', sa.Column('content_hash', sa.String(length=64), nullable=True))
    op.add_column('tenants', sa.Column('media_policy', sa.String(length=16), nullable=False,
                                       server_default='original'))


def downgrade() -> None:
    with op.batch_alter_table('tenants') as batch_op:
        batch_op.drop_column('media_policy')
    with op.batch_alter_table('items') as batch_op:
        batch_op.drop_column('content_hash')
        batch_op.drop_column('source_size')
        batch_op.drop_column('source_sha256')
        batch_op.drop_column('objects')
