"""What a receive connector lets a session do (Exchange's permission groups, simplified).

Exchange grants extended rights (ms-Exch-SMTP-Submit, -Accept-Any-Recipient, …)
to security principals through a connector's permission groups. We keep the
two rights that decide mail flow in M1:

- submit: may the session start a mail transaction at all?
- relay: may it address recipients outside the accepted domains?

Anonymous sessions may submit only where `AnonymousUsers` is granted, and may
never relay: no source address is trusted by default, loopback included.
Authenticated mailbox users may submit and relay, except on a connector only
organization servers may use (its permission groups are ExchangeServers and
ExchangeLegacyServers alone, as on Outbound Proxy Frontend, 717): there a
user's login grants what an anonymous session has. An admin grants anonymous
relay to a remote IP range the Exchange way: a connector for that range with
the `ExternalAuthoritative` auth mechanism ("Externally Secured") and the
`ExchangeServers` permission group.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwerk.directory import connectors as rc
from postwerk.store.records import ReceiveConnector

# Permission groups that admit organization servers and nobody else.
SERVERS_ONLY = frozenset({rc.EXCHANGE_SERVERS, rc.EXCHANGE_LEGACY_SERVERS})


@dataclass(frozen=True, slots=True)
class Rights:
    submit: bool
    relay: bool
    check_sender: bool  # the envelope sender and From must belong to the authenticated user


def rights_for(connector: ReceiveConnector, authenticated: bool, server: bool = False) -> Rights:
    """`authenticated`: a mailbox user logged in; `server`: an organization server
    logged in (`accepts_server_auth`)."""
    groups = set(connector.permission_groups)
    mechanisms = set(connector.auth_mechanisms)
    externally_secured = rc.EXTERNALLY_SECURED in mechanisms and rc.EXCHANGE_SERVERS in groups
    if externally_secured:
        return Rights(submit=True, relay=True, check_sender=False)
    if server and rc.EXCHANGE_SERVERS in groups:
        # The front end that relays checked the sender against its user already, and
        # names the submitter in MAIL FROM's AUTH= (RFC 4954 §5).
        return Rights(submit=True, relay=True, check_sender=False)
    if authenticated and not (groups and groups <= SERVERS_ONLY):
        return Rights(submit=True, relay=True, check_sender=True)
    return Rights(submit=rc.ANONYMOUS_USERS in groups, relay=False, check_sender=False)


def offers_starttls(connector: ReceiveConnector) -> bool:
    return rc.TLS in connector.auth_mechanisms


def offers_auth(connector: ReceiveConnector, tls_active: bool) -> bool:
    mechanisms = set(connector.auth_mechanisms)
    if rc.BASIC_AUTH not in mechanisms:
        return False
    # RequireTLS covers AUTH too: no password crosses in the clear on such a connector.
    return tls_active or (rc.BASIC_AUTH_REQUIRE_TLS not in mechanisms and not connector.require_tls)


def accepts_server_auth(connector: ReceiveConnector, tls_active: bool) -> bool:
    """May an organization server authenticate here (Exchange's ExchangeServer
    mechanism)? Only inside TLS: its password is never accepted in the clear."""
    return tls_active and rc.EXCHANGE_SERVER in connector.auth_mechanisms
