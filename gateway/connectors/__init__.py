"""LMS connectors. Registration is this explicit dict, not plugin discovery."""

from __future__ import annotations

from typing import Protocol

from gateway.connectors._http import LmsHttp
from gateway.connectors.base import Connector
from gateway.connectors.damstra import DamstraConnector
from gateway.connectors.litmos import LitmosConnector
from gateway.connectors.skyprep import SkyPrepConnector
from gateway.settings import AppSettings


class ConnectorFactory(Protocol):
    def __call__(
        self, app_name: str, app: AppSettings, http: LmsHttp, *, dev_mode: bool = False
    ) -> Connector: ...


CONNECTORS: dict[str, ConnectorFactory] = {
    "skyprep": SkyPrepConnector,
    "damstra": DamstraConnector,
    "litmos": LitmosConnector,
}
