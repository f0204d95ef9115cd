"""Mail parsing for ingestion (``parse``) and HTML preparation for display (``html``).

Submodules are imported explicitly (``from connector.mail.parse import parse_message``) so that
importing the package stays cheap and does not pull in nh3 for code that only parses.
"""
