"""Real mail servers for the integration tests: a private Dovecot (IMAP/LMTP) and an SMTP submission server."""
from tests.servers.dovecot import DoveadmError, DovecotServer, dovecot_available
from tests.servers.smtp import Received, SmtpServer

__all__ = ["DoveadmError", "DovecotServer", "Received", "SmtpServer", "dovecot_available"]
