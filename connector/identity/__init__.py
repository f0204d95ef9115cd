"""Sign-in and tokens at the identity provider (Microsoft identity platform v2.0)."""
