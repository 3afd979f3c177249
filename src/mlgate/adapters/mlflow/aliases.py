"""Registry aliases an environment's automation moves: `champion`, the version its endpoint serves."""

from __future__ import annotations

from mlgate.adapters.mlflow.registry import MlflowRegistry

CHAMPION_ALIAS = "champion"


class Aliases(MlflowRegistry):
    """Set and read a registered model's aliases in one environment's registry."""

    def move(self, name: str, alias: str, version: int) -> None:
        with self._calling(f"moving alias '{alias}' of '{name}' to version {version}") as client:
            client.set_registered_model_alias(name, alias, str(version))

    def get(self, name: str, alias: str) -> int | None:
        """The version `alias` points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        with self._calling(f"alias '{alias}' of '{name}'") as client:
            try:
                return int(client.get_model_version_by_alias(name, alias).version)
            except MlflowException as exc:
                if str(exc.error_code) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise
