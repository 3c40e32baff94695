# Custom permissions for support staff, and the "Payment support" group that holds them.

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT_GROUP_NAME = "Payment support"
SUPPORT_PERMISSIONS = ["view_transaction", "view_paymentattempt", "retry_transaction", "cancel_transaction"]


def create_support_group(apps, schema_editor):
    # Permissions are normally created after the last migration (post_migrate);
    # the group needs them now.
    app_config = apps.get_app_config("payments")
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True  # unset on the migration state's stub
    try:
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    finally:
        app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.using(schema_editor.connection.alias).get_or_create(name=SUPPORT_GROUP_NAME)
    group.permissions.add(
        *Permission.objects.using(schema_editor.connection.alias).filter(
            content_type__app_label="payments", codename__in=SUPPORT_PERMISSIONS
        )
    )


def remove_support_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=SUPPORT_GROUP_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("payments", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="transaction",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("retry_transaction", "Can retry and reconcile failed transactions"),
                    ("cancel_transaction", "Can cancel failed transactions"),
                ],
            },
        ),
        migrations.RunPython(create_support_group, remove_support_group),
    ]
