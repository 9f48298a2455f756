"""Create a user with its roles and print its API token."""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from alerts.vocabulary import ADVOCATES_GROUP, PIPELINES_GROUP


class Command(BaseCommand):
    help = "Create a user (--advocate, --pipeline, --staff) and print its API token."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--advocate", action="store_true")
        parser.add_argument("--pipeline", action="store_true")
        parser.add_argument("--staff", action="store_true")
        parser.add_argument("--password", default=None)

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.filter(username=options["name"]).exists():
            raise CommandError(f"user {options['name']} exists already")
        user = users.objects.create_user(options["name"], password=options["password"])
        if not options["password"]:
            user.set_unusable_password()
        user.is_staff = options["staff"]
        user.save()
        for flag, group in (("advocate", ADVOCATES_GROUP), ("pipeline", PIPELINES_GROUP)):
            if options[flag]:
                user.groups.add(Group.objects.get_or_create(name=group)[0])
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
