"""The web app: blueprints for sign-in, admin, mailboxes, tickets and the REST API."""
