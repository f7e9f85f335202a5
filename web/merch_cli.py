"""`coinage synonyms` and `coinage rules`: list, add, remove, import and export (CSV or JSON) the synonyms and
merchandising rules the web app applies, in the same database (COINAGE_DATA_DIR's registry, or
COINAGE_DATABASE_URL). Every change is audited as `cli:<user>` and reaches the running web processes within a
second (docs/merch.md).

    coinage synonyms add "cup => mug"
    coinage synonyms import synonyms.csv --replace      # one synonym per row, column `synonym`
    coinage rules add "cup pins" --match contains --pattern cup --action pin --products p0003 --position 1
    coinage rules export rules.json
"""
from __future__ import annotations

import csv
import getpass
import io
import json
import sys
from pathlib import Path
from typing import Any

from engine.merch.concept_products import check_live, live_concepts
from engine.merch.errors import MerchError
from engine.merch.rules import TEXT_FIELDS, Rule, rule_from_text, rule_to_text
from engine.merch.synonyms import Synonym

FORMATS = ("csv", "json")


def register(sub) -> list[str]:
    ssub = _commands(sub, "synonyms", "search synonyms", _list_synonyms, _import_synonyms, _export_synonyms,
                     lambda store, i, who: store.remove_synonym(i, who))
    add = ssub.add_parser("add", help="add a synonym: 'cup => mug' (one-way) or 'trainers, sneakers' (two-way)")
    add.add_argument("text")
    add.set_defaults(func=_add_synonym)

    rsub = _commands(sub, "rules", "merchandising rules", _list_rules, _import_rules, _export_rules,
                     lambda store, i, who: store.remove_rule(i, who))
    add = rsub.add_parser("add", help="add a rule (pin, boost, bury or hide products for a query)")
    add.add_argument("name")
    add.add_argument("--match", required=True, help="exact, contains, concept or always")
    add.add_argument("--pattern", default="", help="the query (or the concept's <placeholder>)")
    add.add_argument("--action", dest="rule_action", required=True, help="pin, boost, bury or hide")
    add.add_argument("--products", nargs="+", default=[], help="product ids")
    for name in ("position", "category", "colour", "min-price", "max-price", "amount", "start", "end"):
        add.add_argument(f"--{name}")
    add.add_argument("--concept", help="the concept's products (its own query's matches), e.g. '<aurora>'")
    add.add_argument("--disabled", action="store_true", help="store it switched off")
    add.set_defaults(func=_add_rule)
    return ["synonyms", "rules"]


def _commands(sub, what: str, about: str, lister, importer, exporter, remove):
    """`coinage <what>` with its list, remove, import and export actions; returns its subparsers (for `add`)."""
    parser = sub.add_parser(what, help=f"list, add, remove, import and export {about}")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    _listing(actions, what, lister)
    _remove(actions, what[:-1], remove)
    _transfer(actions, what, importer, exporter)
    return actions


def _listing(sub, what: str, func) -> None:
    p = sub.add_parser("list", help=f"the {what}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=func)


def _remove(sub, what: str, remove) -> None:
    p = sub.add_parser("remove", help=f"remove a {what} by id")
    p.add_argument("id", type=int)
    p.set_defaults(func=lambda args: _removed(args, what, remove))


def _transfer(sub, what: str, importer, exporter) -> None:
    imp = sub.add_parser("import", help=f"add the {what} of a CSV or JSON file (in one transaction)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=FORMATS, help="default: from the file's extension")
    imp.add_argument("--replace", action="store_true", help=f"remove every existing one of the {what} first")
    imp.set_defaults(func=importer)
    exp = sub.add_parser("export", help=f"write the {what} as CSV or JSON (to stdout without a file)")
    exp.add_argument("file", type=Path, nargs="?")
    exp.add_argument("--format", choices=FORMATS, help="default: from the file's extension, else json")
    exp.set_defaults(func=exporter)


def _store():
    from engine.concepts import DB_NAME
    from engine.database import database_url_from_env
    from engine.merch import MerchStore
    from web.settings import data_dir_from_env

    return MerchStore(data_dir_from_env() / "concepts" / DB_NAME, database_url_from_env())


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _format(args) -> str:
    if args.format:
        return args.format
    suffix = args.file.suffix.lower().lstrip(".") if args.file else ""
    if args.action == "import" and suffix not in FORMATS:
        raise MerchError(f"cannot tell the format of {args.file} from its extension; pass --format csv or json")
    return suffix if suffix in FORMATS else "json"


def _read(args) -> str:
    try:
        return args.file.read_text(encoding="utf-8")
    except OSError as e:
        raise MerchError(f"cannot read {args.file} ({e.strerror}); check the path") from e


def _write(args, text: str) -> int:
    if args.file is None:
        sys.stdout.write(text)
    else:
        args.file.write_text(text, encoding="utf-8")
        print(f"wrote {args.file}", file=sys.stderr)
    return 0


def _removed(args, what: str, remove) -> int:
    remove(_store(), args.id, _actor())
    print(f"removed {what} {args.id}")
    return 0


# ---------------------------------------------------------------------------- synonyms

def _list_synonyms(args) -> int:
    synonyms = _store().synonyms()
    if args.json:
        print(json.dumps([s.to_json() for s in synonyms], indent=2))
    for s in [] if args.json else synonyms:
        print(f"{s.id:>5}  {s.text}")
    return 0


def _add_synonym(args) -> int:
    s = _store().add_synonym(Synonym.parse(args.text), _actor())
    print(f"added synonym {s.id}: {s.text}")
    return 0


def _import_synonyms(args) -> int:
    synonyms = _items(args, lambda x: Synonym.from_json(x) if isinstance(x, dict) else Synonym.parse(x),
                      lambda row: Synonym.parse(row["synonym"]), "synonym")
    return _imported(_store().add_synonyms(synonyms, _actor(), replace=args.replace), "synonyms")


def _export_synonyms(args) -> int:
    synonyms = _store().synonyms()
    return _exported(args, [{"text": s.text} for s in synonyms], ["synonym"], [{"synonym": s.text} for s in synonyms])


# ---------------------------------------------------------------------------- rules

def _list_rules(args) -> int:
    rules = _store().rules()
    if args.json:
        print(json.dumps([r.to_json() for r in rules], indent=2))
    for r in [] if args.json else rules:
        target = " ".join(r.products) or ", ".join(f"{k}={v}" for k, v in (("category", r.category), (
            "colour", r.colour), ("min_price", r.min_price), ("max_price", r.max_price), ("concept", r.concept))
            if v is not None)
        state = "" if r.enabled else "  (off)"
        print(f"{r.id:>5}  {r.name}: {r.match} {r.pattern!r} -> {r.action} {target}{state}")
    return 0


def _add_rule(args) -> int:
    values = {"name": args.name, "match": args.match, "pattern": args.pattern, "action": args.rule_action,
              "products": " ".join(args.products), "enabled": "false" if args.disabled else "true"}
    values.update({k: getattr(args, k) for k in ("position", "category", "colour", "min_price", "max_price", "concept",
                                                  "amount", "start", "end") if getattr(args, k) is not None})
    rule = rule_from_text(values)
    _check_live([rule])
    r = _store().add_rule(rule, _actor())
    print(f"added rule {r.id}: {r.name}")
    return 0


def _import_rules(args) -> int:
    rules = _items(args, Rule.from_json, rule_from_text, "name")
    _check_live(rules)
    return _imported(_store().add_rules(rules, _actor(), replace=args.replace), "rules")


def _export_rules(args) -> int:
    rules = _store().rules()
    data = [{k: v for k, v in r.to_json().items() if k not in ("id", "updated", "updated_by")} for r in rules]
    return _exported(args, data, list(TEXT_FIELDS), [rule_to_text(r) for r in rules])


def _check_live(rules: list[Rule]) -> None:
    """Refuse rules whose concept filter names a concept without a live token in the registry."""
    from engine.concepts import ConceptRegistry
    from engine.database import database_url_from_env
    from web.settings import data_dir_from_env

    if any(r.concept is not None for r in rules):
        check_live(rules, live_concepts(ConceptRegistry(data_dir_from_env(), database_url_from_env())))


# ---------------------------------------------------------------------------- files

def _items(args, from_json, from_row, column: str) -> list[Any]:
    """What an import file holds: JSON (a list, what `export` writes) or CSV rows (with that `column`)."""
    text = _read(args)
    if _format(args) == "json":
        return [from_json(x) for x in _json_list(text, args.file)]
    return [from_row(row) for row in _csv_rows(text, args.file, column)]


def _imported(stored: list[Any], what: str) -> int:
    print(f"imported {len(stored)} {what}")
    return 0


def _exported(args, data: list[Any], fields: list[str], rows: list[dict[str, str]]) -> int:
    if _format(args) == "json":
        return _write(args, json.dumps(data, indent=2) + "\n")
    return _write(args, _csv_text(fields, rows))


def _json_list(text: str, path: Path) -> list[Any]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MerchError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise MerchError(f"{path} must hold a JSON list (what `export` writes)")
    return data


def _csv_rows(text: str, path: Path, required: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    if required not in (reader.fieldnames or []):
        raise MerchError(f"{path} has no {required!r} column; its header must name the columns `export` writes")
    return list(reader)


def _csv_text(fields: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
