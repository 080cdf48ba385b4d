"""Finding (and, when missing, installing) the Debian packages behind the local services."""

from __future__ import annotations

import glob
import shutil
import subprocess

from guardian.settings import REPO_ROOT
from guardian.stack.errors import StackError

INSTALL_SCRIPT = REPO_ROOT / "deploy" / "local" / "install-system.sh"


def install_packages(*packages: str) -> None:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT), *packages], capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(
            f"could not install Debian packages {', '.join(packages)}:\n{result.stderr.strip()}\n"
            f"Install them yourself (apt-get install {' '.join(packages)}) and run `guardian stack up` again."
        )


def _command_or_install(command: str, package: str, purpose: str) -> str:
    """The path of `command`, installing its Debian package first when it is missing."""
    found = shutil.which(command)
    if found is None:
        install_packages(package)
        found = shutil.which(command)
    if found is None:
        raise StackError(
            f"{command} is not installed ({purpose}) and could not be installed: apt-get install {package}"
        )
    return found


def redis_server_binary() -> str:
    return _command_or_install("redis-server", "redis-server", "the hot view's store")


def postgres_bin_dir() -> str:
    """The newest PostgreSQL server's bin directory from Debian's layout (/usr/lib/postgresql/<v>/bin)."""

    def newest() -> str | None:
        dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if glob.glob(f"{d}/postgres")]
        return max(dirs, key=lambda d: int(d.split("/")[-2])) if dirs else None

    found = newest()
    if found is None:
        install_packages("postgresql")
        found = newest()
    if found is None:
        raise StackError(
            "the PostgreSQL server is not installed and could not be installed: apt-get install postgresql"
        )
    return found


def java_binary() -> str:
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "Java is not installed; Kafka needs Java 17 or newer. "
            "Install it (apt-get install default-jre-headless) or put `java` on PATH."
        )
    version = subprocess.run([found, "-version"], capture_output=True, text=True).stderr
    major = _java_major(version)
    if major is not None and major < 17:
        raise StackError(f"Kafka 4 needs Java 17 or newer; `{found}` is Java {major}. Install a newer JDK.")
    return found


def _java_major(version_output: str) -> int | None:
    import re

    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    first = int(match.group(1))
    return int(match.group(2)) if first == 1 and match.group(2) else first


def maven_binary() -> str:
    return _command_or_install("mvn", "maven", "it fetches Kafka from Maven Central")
