"""Quality monitoring: samples, versioned evaluation forms, reviews and their history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'samples',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('seed', sa.String(length=64), nullable=False),
        sa.Column('inputs', sa.JSON(), nullable=False),
        sa.Column('item_ids', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name='fk_samples_tenant_tenants'),
        sa.PrimaryKeyConstraint('id', name='pk_samples'),
    )
    op.create_index('ix_samples_tenant', 'samples', ['tenant', 'created_at'], unique=False)
    op.create_table(
        'forms',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('criteria', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name='fk_forms_tenant_tenants'),
        sa.PrimaryKeyConstraint('id', name='pk_forms'),
        sa.UniqueConstraint('tenant', 'name', 'version', name='uq_forms_version'),
    )
    op.create_table(
        'reviews',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('item_id', sa.Uuid(), nullable=False),
        sa.Column('reviewer', sa.String(length=100), nullable=False),
        sa.Column('form_id', sa.Uuid(), nullable=False),
        sa.Column('scores', sa.JSON(), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('notes', sa.String(length=10000), nullable=True),
        sa.Column('training_need', sa.Boolean(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.id'], name='fk_reviews_tenant_tenants'),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'], name='fk_reviews_item_id_items'),
        sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name='fk_reviews_form_id_forms'),
        sa.PrimaryKeyConstraint('id', name='pk_reviews'),
        sa.UniqueConstraint('item_id', 'reviewer', name='uq_reviews_reviewer'),
    )
    op.create_index('ix_reviews_tenant', 'reviews', ['tenant', 'created_at'], unique=False)
    op.create_table(
        'review_versions',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('review_id', sa.Uuid(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('form_id', sa.Uuid(), nullable=False),
        sa.Column('scores', sa.JSON(), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('notes', sa.String(length=10000), nullable=True),
        sa.Column('training_need', sa.Boolean(), nullable=False),
        sa.Column('written_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['reviews.id'],
                                name='fk_review_versions_review_id_reviews'),
        sa.PrimaryKeyConstraint('id', name='pk_review_versions'),
        sa.UniqueConstraint('review_id', 'version', name='uq_review_versions'),
    )


def downgrade() -> None:
    op.drop_table('review_versions')
    op.drop_index('ix_reviews_tenant', table_name='reviews')
    op.drop_table('reviews')
    op.drop_table('forms')
    op.drop_index('ix_samples_tenant', table_name='samples')
    op.drop_table('samples')
