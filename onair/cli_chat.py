"""`onair user token` and `onair mod …`: chat tokens and moderation from the command line.

    onair user token NAME [--ttl SECONDS] [--json]     a chat token for NAME (prints it)
    onair mod ban CHANNEL USER [--reason TEXT]
    onair mod timeout CHANNEL USER SECONDS [--reason TEXT]
    onair mod unban CHANNEL USER
    onair mod delete CHANNEL MESSAGE_ID
    onair mod slow CHANNEL SECONDS                      0 turns slow mode off

Moderation actions are produced to the compacted `onair.moderation` topic, exactly what the
HTTP API does; every chat server applies them within a second. Kafka is imported lazily so
`pipeline` stays free of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.chat import ModerationAction, action_from_fields
from pipeline.settings import Settings
from pipeline.tokens import DEFAULT_TTL_S, MAX_TTL_S, canonical_user, issue_token, verify_token

logger = logging.getLogger(__name__)


def register(subparsers: Any, settings_factory: Callable[[], Settings]) -> None:
    """Add `user` and `mod` to the `onair` parser; each leaf sets `func(args, settings)`."""
    del settings_factory  # the caller builds Settings once and passes it to `func`
    user = subparsers.add_parser("user", help="chat users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    token = user_sub.add_parser("token", help="issue a chat token for a user name")
    token.add_argument("name")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="seconds (default 1 day)")
    token.add_argument("--json", action="store_true")
    token.set_defaults(func=cmd_user_token)

    mod = subparsers.add_parser("mod", help="chat moderation: ban, timeout, unban, delete, slow")
    mod_sub = mod.add_subparsers(dest="mod_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = mod_sub.add_parser(name, help=help_text)
        parser.add_argument("channel")
        parser.set_defaults(func=cmd_mod, action=name)
        parser.add_argument("--by", default="cli", help="moderator name stored with the action")
        parser.add_argument("--json", action="store_true")
        return parser

    ban = action("ban", "ban a user from a channel")
    ban.add_argument("user")
    ban.add_argument("--reason")
    timeout = action("timeout", "stop a user chatting for SECONDS")
    timeout.add_argument("user")
    timeout.add_argument("seconds", type=int)
    timeout.add_argument("--reason")
    unban = action("unban", "lift a ban or timeout")
    unban.add_argument("user")
    delete = action("delete", "delete one message (viewers hide it, history drops it)")
    delete.add_argument("message_id")
    slow = action("slow", "slow mode: one message per user every SECONDS (0 = off)")
    slow.add_argument("seconds", type=int)


def cmd_user_token(args: argparse.Namespace, settings: Settings) -> int:
    try:
        name = canonical_user(args.name)
        if not 1 <= args.ttl <= MAX_TTL_S:
            raise ValueError(f"--ttl must be within 1..{MAX_TTL_S}")
    except ValueError as exc:
        print(f"onair: {exc}", file=sys.stderr)
        return 2
    token = issue_token(settings.token_secret, name, args.ttl)
    claims = verify_token(settings.token_secret, token)
    if args.json:
        print(json.dumps({"user": name, "token": token, "expires_ms": claims.expires_ms}))
    else:
        print(token)
    return 0


def cmd_mod(args: argparse.Namespace, settings: Settings) -> int:
    fields = {
        k: getattr(args, k)
        for k in ("user", "seconds", "message_id", "reason")
        if getattr(args, k, None) is not None
    }
    fields["moderator"] = args.by
    try:
        action = action_from_fields(args.channel, args.action, fields, int(time.time() * 1000))
    except ValueError as exc:
        print(f"onair: {exc}", file=sys.stderr)
        return 2
    from topics.client import DeliveryError

    try:
        produce_action(settings.kafka_bootstrap, action)
    except DeliveryError as exc:
        print(f"onair: the action was not stored: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(action.to_json()))
    else:
        target = action.user or action.message_id or f"{action.seconds}s"
        print(f"{action.action} {target} in {action.channel}: stored")
    return 0


def produce_action(bootstrap: str, action: ModerationAction) -> None:
    """Store one action durably in the moderation topic (raises if the brokers refuse)."""
    from schemas.codec import Codec
    from topics.client import CheckedProducer
    from topics.specs import MODERATION

    producer = CheckedProducer(bootstrap, partitioner="murmur2_random")
    value = Codec().encode("ModerationAction", action.to_record())
    producer.send(MODERATION, action.key, value)  # flushes; DeliveryError if not acknowledged
    logger.info("moderation %s channel=%s by %s", action.action, action.channel, action.moderator)
