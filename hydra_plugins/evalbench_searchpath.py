"""Hydra search-path plugin: the user's config folders before evalbench's built-in `conf/`.

Hydra's own `hydra.searchpath` appends folders after the primary config folder, so a built-in
config would always win over a user's of the same name; this plugin puts the folders of
`engine.config.paths.config_sources()` first instead (docs/architecture.md, "Paths"). It acts
only when the primary config folder is evalbench's, so other Hydra apps are untouched.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

from engine.config.paths import conf_dir, config_sources


def _folder(path: str) -> Path:
    return Path(path.removeprefix("file://")).resolve()


class EvalbenchSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        main = [e for e in search_path.get_path() if e.provider == "main"]
        if not main or _folder(main[0].path) != conf_dir().resolve():
            return
        for source in config_sources():
            if not source.builtin:
                search_path.prepend("evalbench-user", f"file://{source.path}", anchor=SearchPathQuery(provider="main"))
