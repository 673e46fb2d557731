"""supervisord.conf agrees with the Python side on the one exit status they share."""

from __future__ import annotations

import configparser
from pathlib import Path

from appliance.runtime import exitcodes

CONF = Path(__file__).resolve().parents[2] / "appliance" / "runtime" / "supervisord.conf"


def test_supervisord_treats_the_launchers_models_failed_status_as_expected() -> None:
    conf = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    conf.read(CONF, encoding="utf-8")
    assert conf.get("program:triton", "exitcodes").split(",") == [str(exitcodes.MODELS_FAILED)]
    assert conf.get("program:triton", "autorestart") == "unexpected"
