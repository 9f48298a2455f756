"""HTTP basic authentication with a password or an API token.

``ligo-gracedb`` authenticates with SciTokens, X.509 certificates or HTTP
basic credentials (through ``igwn-auth-utils``, from a netrc file when
SciTokens are off). This surface takes basic credentials: the user's name
with either the password or the user's API token (the native API's
``Token``) as the password, so that a pipeline's secret need not be a login
password.
"""
import hmac

from django.contrib.auth import authenticate
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication
from rest_framework.authtoken.models import Token

REALM = "gracedb"


class PasswordOrTokenBasicAuthentication(BasicAuthentication):
    www_authenticate_realm = REALM

    def authenticate_credentials(self, userid, password, request=None):
        # The token first: a lookup, where a password costs a slow hash.
        user = self.user_with_token(userid, password)
        if user is None:
            user = authenticate(request=request, username=userid, password=password)
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("invalid user name, password or API token")
        return user, None

    @staticmethod
    def user_with_token(userid, key):
        token = Token.objects.select_related("user").filter(
            user__username=userid, user__is_active=True).first()
        if token is not None and hmac.compare_digest(token.key, key):
            return token.user
        return None


