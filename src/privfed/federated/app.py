"""Flower glue: the ServerApp and ClientApp objects the SuperLink and SuperNodes load.

Kept thin on purpose: all logic is in :mod:`privfed.federated.server`,
:mod:`privfed.federated.client` and SecAgg+'s hospital half
(:mod:`privfed.federated.secagg.hospital`). (Flower's import check wants plain top-level
assignments.)
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid, ServerApp

from privfed.federated.client import evaluate_reply, query_reply, train_reply
from privfed.federated.flat import flat_arrays_mod
from privfed.federated.secagg.hospital import (
    is_secure_fit,
    secure_aggregation_mod,
    secure_train_reply,
)
from privfed.federated.server import exit_when_orphaned, run_server
from privfed.logs import print_flower_lines_once

print_flower_lines_once()  # opacus' import-time basicConfig would print each Flower line twice

# Flower redirects a ServerApp's stdout into the log stream that `flwr run --stream` shows, by
# repointing its own handler. Our records go through that handler, so they are streamed too.
_privfed_logger = logging.getLogger("privfed")
_privfed_logger.setLevel(logging.INFO)
_privfed_logger.propagate = False
for _handler in FLOWER_LOGGER.handlers:
    _privfed_logger.addHandler(_handler)

server_app = ServerApp()
# outermost: every handler (and SecAgg+'s mod) sees per-tensor records, however they travelled
client_app = ClientApp(mods=[flat_arrays_mod])


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    exit_when_orphaned()
    run_server(grid, dict(context.run_config))


# SecAgg+ (train_federated.secure_aggregation) speaks Flower's legacy FitIns/FitRes through
# its mod; the mod lets every other train message through to the Message API handler.
@client_app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    reply = secure_train_reply if is_secure_fit(msg.content) else train_reply
    return Message(
        content=reply(msg.content, dict(context.node_config), context.state), reply_to=msg
    )


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return Message(
        content=evaluate_reply(msg.content, dict(context.node_config), context.state), reply_to=msg
    )


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(
        content=query_reply(msg.content, dict(context.node_config), context.state),
        reply_to=msg,
    )
