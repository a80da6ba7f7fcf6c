"""Four-eyes and quorum: `Approval`, one reviewer's partial approval of a review whose
workflow needs several (Workflow.approvals_required / approval_groups). A new table only."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import workflows.sealed


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0003_deadlines"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Approval",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("group", models.CharField(blank=True, default="", max_length=150)),
                ("updates", workflows.sealed.SealedJSONField(blank=True, default=dict)),
                ("edited", models.BooleanField(default=False)),
                ("comment", workflows.sealed.SealedTextField(blank=True)),
                ("checkpoint_id", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("superseded_at", models.DateTimeField(blank=True, null=True)),
                (
                    "actor",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "review",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="approvals",
                        to="approvals.review",
                    ),
                ),
                (
                    "superseded_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="approvals.approval",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["review", "created_at"], name="approval_review")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("superseded_at__isnull", True)),
                        fields=("review", "actor"),
                        name="approval_one_counting_per_actor",
                    )
                ],
            },
        ),
    ]
