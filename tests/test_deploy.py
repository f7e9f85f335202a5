"""deploy/: what can be checked without Docker (which cannot run here).

The compose file and the Dockerfiles parse; every path, module, command and variable they name
exists in the code; the environment compose gives the app yields the intended production settings;
and every command in docs/deploy.md is run here when it can be
(secret generation, `coinage ...`, sourcing the .env file) or else checked against the compose file
and the command-line parser (`docker compose ...`, `curl` to published ports).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCS = ROOT / "docs" / "deploy.md"
PACKAGES = ("coinage", "engine", "indexer", "trainer", "web", "world")
QDRANT_NODES = ("qdrant-0", "qdrant-1", "qdrant-2")
APP_SERVICES = ("web", "worker", "worker-2")
# test values for the secrets the example leaves empty
SECRETS = {"QDRANT_API_KEY": "q" * 64, "COINAGE_SECRET_KEY": "s" * 64, "POSTGRES_PASSWORD": "p" * 64,
           "COINAGE_ADMIN_PASSWORD_HASH": "scrypt:32768:8:1$salt$0123abcd"}
POSTGRES_MAJOR = "15"  # the server the tests run against (tests/pg_server.py: Debian's postgresql)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- helpers ---------------------------------------------------------------------------------


class MissingVariable(Exception):
    pass


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("?", ":?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in ("-", ":-") and unset:
            return arg
        return current or ""

    return _VAR.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def compose_vars(node) -> set[str]:
    """Every ${VAR} the compose file interpolates."""
    if isinstance(node, dict):
        return set().union(*(compose_vars(v) for v in node.values()), set())
    if isinstance(node, list):
        return set().union(*(compose_vars(v) for v in node), set())
    return {m.group(1) for m in _VAR.finditer(node)} if isinstance(node, str) else set()


def read_env_file(path: Path) -> dict[str, str]:
    """A .env file as compose reads it (KEY=VALUE, # comments, single quotes literal)."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(DEPLOY / ".env.example")


@pytest.fixture(scope="module")
def compose(raw_compose, env_example) -> dict:
    """The compose file as `docker compose config` would see it with a filled-in deploy/.env."""
    return interpolate(raw_compose, {**env_example, **SECRETS})


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path}: unterminated continuation"
    return out


def dockerfile_env(instructions) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def coinage_args(argv: list[str]):
    """Parse a `coinage ...` command line with the real parser; fails the test on unknown commands."""
    from coinage.cli import build_parser

    assert argv and argv[0] == "coinage", argv
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as e:  # argparse reports on stderr and exits
        raise AssertionError(f"`{shlex.join(argv)}` is not a valid coinage command") from e
    assert "_pending" not in args.func.__qualname__, f"`{shlex.join(argv)}` is a stub (coinage.cli.PENDING)"
    return args


def gunicorn_args(argv: list[str]):
    from gunicorn.config import Config

    assert argv[0] == "gunicorn"
    return Config().parser().parse_args(argv[1:])


def code_env_vars() -> set[str]:
    """Names COINAGE_* that the code reads: string constants in the packages and deploy scripts."""
    found: set[str] = set()
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + list(DEPLOY.glob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                    r"COINAGE_[A-Z0-9_]+", node.value):
                found.add(node.value)
    return found


# --- compose ---------------------------------------------------------------------------------


def test_qdrant_runs_as_a_three_node_cluster(compose, raw_compose):
    from importlib.metadata import version

    services = compose["services"]
    assert [s for s in services if s.startswith("qdrant")] == list(QDRANT_NODES)
    storages = set()
    for i, name in enumerate(QDRANT_NODES):
        svc = services[name]
        image, _, tag = svc["image"].partition(":")
        assert image == "qdrant/qdrant"
        # snapshots restore only within a minor version, and the client talks to the same minor
        assert tag.lstrip("v").split(".")[:2] == version("qdrant-client").split(".")[:2], (
            f"QDRANT_VERSION {tag} and qdrant-client {version('qdrant-client')} differ in their minor version")
        assert svc["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert svc["environment"]["QDRANT__SERVICE__API_KEY"] == SECRETS["QDRANT_API_KEY"]
        command = svc["command"]
        assert command[command.index("--uri") + 1] == f"http://{name}:6335"
        if i == 0:
            assert "--bootstrap" not in command
        else:
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-0:6335"
            assert svc["depends_on"]["qdrant-0"]["condition"] == "service_healthy"
        storage = [v for v in svc["volumes"] if v.endswith(":/qdrant/storage")]
        assert len(storage) == 1
        storages.add(storage[0])
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert len(storages) == 3  # each node its own storage
    assert all(v.split(":")[0] in raw_compose["volumes"] for v in storages)
    # the p2p port (writes without the API key) is never published
    assert all("6335" not in " ".join(services[n].get("ports", [])) for n in QDRANT_NODES)


def app_env(svc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in svc["environment"].items()}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_processes_get_production_settings_from_compose(compose, service):
    from engine.store.snapshots import SnapshotConfig
    from web.settings import AppSettings, data_dir_from_env, store_config_from_env

    env = app_env(compose["services"][service])
    settings = AppSettings.from_env(env)  # production: refuses missing secrets
    assert settings.env == "production" and settings.worker.mode == "process"
    store = settings.store
    assert (store.backend, store.url, store.api_key) == ("server", "http://qdrant-0:6333", SECRETS["QDRANT_API_KEY"])
    assert store.shard_number >= 3
    assert store.replication_factor == 2
    assert 1 <= store.write_consistency_factor <= store.replication_factor
    snapshots = SnapshotConfig.from_env(store_config_from_env(env), data_dir_from_env(env), env)
    assert snapshots.nodes == tuple(f"http://{n}:6333" for n in QDRANT_NODES)
    assert str(snapshots.dir).startswith(str(settings.data_dir))
    assert settings.query.preview_dir.startswith(str(settings.data_dir))  # the preview cache is shared
    assert settings.database_url == f"postgresql://coinage:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/coinage"


def test_postgres_holds_jobs_and_the_registry(compose, raw_compose):
    from urllib.parse import urlsplit

    pg = compose["services"]["postgres"]
    image, _, tag = pg["image"].partition(":")
    assert image == "postgres" and tag.split(".")[0] == POSTGRES_MAJOR  # the major version the tests run on
    env = pg["environment"]
    assert env["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    (data,) = pg["volumes"]
    assert data.split(":")[0] in raw_compose["volumes"] and data.endswith(":/var/lib/postgresql/data")
    assert pg["healthcheck"]["test"][1] == "pg_isready" and "ports" not in pg  # reachable on the compose network only
    for name in APP_SERVICES:
        svc = compose["services"][name]
        url = urlsplit(app_env(svc)["COINAGE_DATABASE_URL"])
        assert (url.hostname, url.port, url.username, url.password, url.path) == (
            "postgres", 5432, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "/" + env["POSTGRES_DB"])
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_process_reaches_the_shared_state(compose, raw_compose):
    """Data dir, model cache and catalog are the same volumes at the same paths in every app process."""
    mounts = {}
    for name in APP_SERVICES:
        svc = compose["services"][name]
        env = app_env(svc)
        volumes = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        data, hf, catalog = env["COINAGE_DATA_DIR"], env["HF_HOME"], str(Path(env["COINAGE_CATALOG"]).parent)
        assert volumes[data] in raw_compose["volumes"]  # a named volume, not the container's layer
        assert env["COINAGE_HOME"] == data  # `coinage concept ...` sees the app's registry
        model_mount = next(m for m in volumes if hf.startswith(m + "/"))
        assert volumes[model_mount] in raw_compose["volumes"]
        assert catalog in volumes
        mounts[name] = (volumes[data], volumes[model_mount], volumes[catalog], data, hf)
    assert len(set(mounts.values())) == 1, mounts
    web = compose["services"]["web"]
    assert app_env(web)["COINAGE_WORKER"] == "process"  # no web process generates previews


def test_web_serves_the_wsgi_app_under_gunicorn_with_several_workers(compose):
    web = compose["services"]["web"]
    args = gunicorn_args(web["command"])
    assert args.workers >= 2
    (bind,) = args.bind
    port = bind.rsplit(":", 1)[1]
    assert any(p.endswith(f":{port}") for p in web["ports"])
    (app,) = args.args
    module, _, attr = app.partition(":")
    spec = importlib.util.find_spec(module)  # importing it would build the app (load a backbone)
    assert spec is not None and spec.origin
    tree = ast.parse(Path(spec.origin).read_text())
    assert attr in {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Name)}
    assert web["build"]["dockerfile"] == "deploy/Dockerfile"
    assert web["healthcheck"]["test"][-1] == "web"


@pytest.mark.parametrize("service", ["worker", "worker-2"])
def test_workers_run_coinage_worker_on_a_gpu(compose, service):
    from web.cli import _worker

    svc = compose["services"][service]
    assert coinage_args(svc["command"]).func is _worker
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    assert app_env(svc)["COINAGE_DEVICE"] == "cuda"
    assert svc["healthcheck"]["test"][-1] == "worker"
    assert int(svc["stop_grace_period"].rstrip("m")) >= 1  # time to re-queue running jobs on SIGTERM


def test_workers_use_distinct_gpus(compose):
    ids = [compose["services"][s]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
           for s in ("worker", "worker-2")]
    assert ids[0] != ids[1]


def test_build_contexts_and_health_scripts_exist(compose):
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        test = svc.get("healthcheck", {}).get("test", [])
        for arg in test:
            if arg.startswith("/app/"):  # the images COPY the repository to /app
                assert (ROOT / arg.removeprefix("/app/")).is_file(), (name, arg)


def test_secrets_are_required_and_absent_from_the_example(raw_compose, env_example):
    for var in SECRETS:
        assert env_example[var] == "", f"{var} must be an empty placeholder in deploy/.env.example"
        with pytest.raises(MissingVariable, match=var):
            interpolate(raw_compose, {**env_example, **{k: v for k, v in SECRETS.items() if k != var}})
    line = next(x for x in (DEPLOY / ".env.example").read_text().splitlines()
                if x.startswith("COINAGE_ADMIN_PASSWORD_HASH="))
    assert line.endswith("''"), "the hash contains $: the example must show it in single quotes"
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()
    for ignore in ("Dockerfile.dockerignore", "Dockerfile.cuda.dockerignore"):
        assert {"deploy/.env", ".venv", "var"} <= set((DEPLOY / ignore).read_text().split())


# --- variables -------------------------------------------------------------------------------


def test_environment_variables_are_read_and_documented(raw_compose, env_example):
    read = code_env_vars()
    compose_names = compose_vars(raw_compose)
    for svc in raw_compose["services"].values():
        compose_names |= set((svc.get("environment") or {}).keys())
    dockerfile_names = set()
    for name in ("Dockerfile", "Dockerfile.cuda"):
        dockerfile_names |= set(dockerfile_env(parse_dockerfile(DEPLOY / name)))
    for where, names in (("deploy/compose.yaml", compose_names), ("deploy/.env.example", set(env_example)),
                         ("the Dockerfiles", dockerfile_names)):
        unread = {n for n in names if n.startswith("COINAGE_")} - read
        assert not unread, f"{where} sets {sorted(unread)}, which no code reads"
    # every interpolated variable is in the example, and the example holds nothing else
    assert compose_vars(raw_compose) == set(env_example)
    documented = set(re.findall(r"`(COINAGE_[A-Z0-9_]+)", DOCS.read_text() + (ROOT / "docs" / "web.md").read_text()))
    assert read - documented == set(), "document these in docs/deploy.md or docs/web.md"
    deploy_doc = DOCS.read_text()
    for name in set(env_example) - read:  # compose-only variables are explained too
        assert f"`{name}`" in deploy_doc, name


# --- Dockerfiles -----------------------------------------------------------------------------

KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


@pytest.mark.parametrize("name,role", [("Dockerfile", "web"), ("Dockerfile.cuda", "worker")])
def test_dockerfiles_are_non_root_with_health_checks_and_volumes(name, role):
    instructions = parse_dockerfile(DEPLOY / name)
    keywords = [k for k, _ in instructions]
    assert set(keywords) <= KNOWN
    assert keywords.index("FROM") == 1 and keywords[0] == "ARG"  # the base image is a build argument
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")  # nothing runs as root after
    (health,) = [a for k, a in instructions if k == "HEALTHCHECK"]
    cmd = json.loads(health[health.index("CMD") + 3:].strip())
    assert cmd[-2:] == ["/app/deploy/healthcheck.py", role] and (ROOT / "deploy/healthcheck.py").is_file()
    (volumes,) = [json.loads(a) for k, a in instructions if k == "VOLUME"]
    env = dockerfile_env(instructions)
    assert {"/data", "/models"} <= set(volumes)
    assert env["HF_HOME"].startswith("/models/") and env["COINAGE_DATA_DIR"] == "/data"
    for k, a in instructions:
        if k == "COPY":
            *sources, _dest = a.split()
            assert all((ROOT / s).exists() for s in sources if not s.startswith("--")), a
    (cmd,) = [json.loads(a) for k, a in instructions if k == "CMD"]
    if cmd[0] == "gunicorn":
        assert gunicorn_args(cmd).args == ["web.wsgi:app"]
    else:
        coinage_args(cmd)
    assert "EXPOSE" in keywords


def test_cuda_image_installs_the_gpu_runtime():
    runs = " ".join(a for k, a in parse_dockerfile(DEPLOY / "Dockerfile.cuda") if k == "RUN")
    assert re.search(r'/app\[([a-z]+,)*gpu[],]', runs)
    assert "pip uninstall -y onnxruntime" in runs and "onnxruntime-gpu" in runs
    extras = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \["onnxruntime-gpu', extras, re.M)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_images_install_the_postgres_driver(name):
    runs = " ".join(a for k, a in parse_dockerfile(DEPLOY / name) if k == "RUN")
    assert re.search(r'pip install -e "/app\[([a-z]+,)*postgres[],]', runs), name
    assert re.search(r'^postgres = \["psycopg\[binary\]', (ROOT / "pyproject.toml").read_text(), re.M)


# --- docs/deploy.md --------------------------------------------------------------------------


def doc_commands() -> list[str]:
    """Every command line in the ```bash blocks of docs/deploy.md (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def check_docker_compose(argv: list[str], compose: dict) -> None:
    assert argv[:4] == ["docker", "compose", "-f", "deploy/compose.yaml"], argv
    assert COMPOSE_FILE.is_file()
    rest = argv[4:]
    if rest[:2] == ["--profile", "gpu2"]:
        assert "gpu2" in compose["services"]["worker-2"]["profiles"]
        rest = rest[2:]
    sub, args = rest[0], rest[1:]
    services = compose["services"]
    if sub in ("config", "build", "ps"):
        assert all(a.startswith("--") for a in args), argv
    elif sub == "up":
        assert args[0] == "-d" and all(a in services for a in args[1:]), argv
    elif sub == "logs":
        assert args[-1] in services
    elif sub == "cp":
        paths = [a for a in args if ":" in a]
        assert len(paths) == 1 and paths[0].split(":")[0] in services and paths[0].split(":")[1].startswith("/data")
    elif sub == "run":
        i = 0
        while args[i].startswith("-"):
            if args[i] == "-v":  # a bind mount: host:container[:ro]
                i += 1
            i += 1
        assert args[i] in services, argv
        parsed = coinage_args(args[i + 1:])
        if getattr(parsed, "catalog", None) is not None:  # paths inside the container are mounted
            mounts = [v.split(":")[1] for v in services[args[i]]["volumes"]]
            assert any(str(parsed.catalog).startswith(m + "/") for m in mounts), argv
    else:
        raise AssertionError(f"unchecked docker compose subcommand in docs/deploy.md: {argv}")


def check_curl(argv: list[str], compose: dict) -> None:
    url = next(a for a in argv if a.startswith("http://"))
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", url)
    assert m, url
    port, path = m.groups()
    published = {p.split(":")[-2]: name for name, svc in compose["services"].items() for p in svc.get("ports", [])}
    assert port in published, f"{url}: port {port} is not published by deploy/compose.yaml"
    if published[port] == "web":  # a route of the app (its operations blueprint, without building the app)
        from flask import Flask

        from web.views import ops

        app = Flask("routes")
        app.register_blueprint(ops.bp)
        app.url_map.bind("localhost").match(path, method="GET")
    else:
        assert re.fullmatch(r"/cluster|/collections/[A-Za-z0-9_.-]+", path), path
        assert "api-key: $QDRANT_API_KEY" in argv


def test_every_command_in_the_deploy_doc_is_checked(compose, env_example, tmp_path):
    commands = doc_commands()
    assert len(commands) >= 15
    seen = set()
    for line in commands:
        argv = shlex.split(line)
        if argv[:2] == ["docker", "compose"]:
            check_docker_compose(argv, compose)
        elif argv[0] == "coinage":
            coinage_args(argv)
        elif argv[0] == "curl":
            check_curl(argv, compose)
        elif argv[:2] == ["python3", "-c"]:  # run it here
            out = subprocess.run([sys.executable, "-c", argv[2]], input="s3cret-passw0rd\n", capture_output=True,
                                 text=True, timeout=60, check=True).stdout.strip().split()[-1]
            if "generate_password_hash" in argv[2]:
                from werkzeug.security import check_password_hash

                assert check_password_hash(out, "s3cret-passw0rd")
            else:
                assert re.fullmatch(r"[0-9a-f]{64}", out)
        elif argv[:3] == ["openssl", "rand", "-hex"]:
            if shutil.which("openssl"):
                out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
                assert re.fullmatch(r"[0-9a-f]{64}", out)
        elif argv[:2] == ["ray", "start"]:  # Ray's own CLI, for the bulk reindex's cluster
            assert "--head" in argv and argv[argv.index("--port") + 1].isdigit(), argv
        elif argv[0] == "export":  # a variable the code reads, given a value
            name, _, value = argv[1].partition("=")
            assert name in code_env_vars() and value, argv
        elif argv[0] == "cp":
            assert argv[1:] == ["deploy/.env.example", "deploy/.env"] and (ROOT / argv[1]).is_file()
        elif argv[:2] == ["chmod", "600"]:
            assert argv[2] == "deploy/.env"
        elif argv[:2] == ["mkdir", "-p"]:
            assert all(a.startswith("deploy/") for a in argv[2:]) and "backups/" in (DEPLOY / ".gitignore").read_text()
        elif line == "set -a && . deploy/.env && set +a":
            # source a filled-in copy: the single-quoted hash must come through with its `$` intact
            filled = (DEPLOY / ".env.example").read_text()
            for key, value in SECRETS.items():
                filled = re.sub(rf"^{key}=.*$", f"{key}='{value}'", filled, flags=re.M)
            (tmp_path / "deploy").mkdir(exist_ok=True)
            (tmp_path / "deploy" / ".env").write_text(filled)
            out = subprocess.run(["bash", "-c", line + ' && printf "%s|%s" "$QDRANT_API_KEY" '
                                  '"$COINAGE_ADMIN_PASSWORD_HASH"'], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=30, check=True).stdout
            assert out == f"{SECRETS['QDRANT_API_KEY']}|{SECRETS['COINAGE_ADMIN_PASSWORD_HASH']}"
        else:
            raise AssertionError(f"docs/deploy.md has a command no test checks: {line}")
        seen.add(argv[0] if argv[0] != "docker" else " ".join(argv[4:6]))
    # the walk-through covers bring-up, snapshots and the backbone change
    assert {"up -d", "run --rm", "curl", "python3"} <= seen


def test_sizing_table_follows_its_formula_and_cites_the_benchmarks():
    text = DOCS.read_text()
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| ([\d.]+) GB \(([\d.]+) GB\) \| ([\d.]+) GB \| ([\d.]+) GB \| "
                      r"([\d.]+) GB \|$", text, re.M)
    assert [int(r[0]) for r in rows] == [128, 512, 768, 1024]
    scale = json.loads((ROOT / "bench/results/store_scale.json").read_text())
    assert scale["data"]["dim"] == 768
    measured = scale["sizes"]["100000"]
    int8, fp32 = measured["int8"], measured["none"]
    for width, per_copy, per_copy_fp32, cluster, per_node, disk in rows:
        n, w = 1e6, int(width)
        assert float(per_copy) == pytest.approx(n * (5 * w + 1390) / 1e9, abs=0.051)
        assert float(per_copy_fp32) == pytest.approx(n * (4 * w + 1240) / 1e9, abs=0.051)
        assert float(cluster) == pytest.approx(2 * float(per_copy), abs=0.051)
        assert float(per_node) == pytest.approx(2 * float(per_copy) / 3, abs=0.051)
        assert float(disk) == pytest.approx(n * (5 * w + 2170 + 500) / 1e9, abs=0.051)
        if w == 768:  # the formula's constants are the measured ones
            assert float(per_copy) == pytest.approx(n * int8["memory_bytes_per_point"] / 1e9, abs=0.051)
            assert float(per_copy_fp32) == pytest.approx(n * fp32["memory_bytes_per_point"] / 1e9, abs=0.051)
            assert float(disk) == pytest.approx(n * (int8["disk_bytes_per_point"] + 500) / 1e9, abs=0.051)
    for entry, search in ((fp32, fp32["fp32"]), (int8, int8["oversampling=2"])):
        for cite in (f"{entry['upsert_points_per_s']:,} /s",
                     f"{entry['index_build_s']:.0f} s ({entry['index_build_cpu_s']:.0f} CPU-s)",
                     f"{search['unfiltered']['p50_ms']:.1f} / {search['unfiltered']['p95_ms']:.1f} ms",
                     f"{int8['memory_bytes_per_point']:,} with it", f"{fp32['memory_bytes_per_point']:,} bytes"):
            assert cite in text, f"docs/deploy.md no longer matches bench/results/store_scale.json: {cite!r}"
    store = json.loads((ROOT / "bench/results/store.json").read_text())["chosen"]
    query = json.loads((ROOT / "bench/results/query.json").read_text())["search"]["100000"]
    indexing = {r["model"]: r for r in json.loads((ROOT / "bench/results/indexing.json").read_text())["results"]}
    cited = {
        f"{store['upsert_points_per_s']:,} points/s": True,
        f"{store['index_build_s']:.0f} s wall": True,
        f"p50 {store['unfiltered']['p50_ms']:.1f} ms / p95 {store['unfiltered']['p95_ms']:.1f} ms": True,
        f"p50 {query['service_cold_text']['p50_ms']:.1f} ms / p95 {query['service_cold_text']['p95_ms']:.1f} ms": True,
        f"ViT-B-32 {indexing['arch:ViT-B-32']['encoder']['ort_fp32']['img_per_s']:.1f} images/s": True,
        f"ViT-L-14 {indexing['arch:ViT-L-14']['pipeline']['rate_img_per_s']:.2f} images/s": True,
    }
    missing = [c for c in cited if c not in text]
    assert not missing, f"docs/deploy.md no longer matches bench/results: {missing}"
