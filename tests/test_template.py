"""The AWS SAM template: routes, handlers, schedule, secrets, lint.

Nothing here talks to AWS. The template is expanded with the SAM translator
(`samtranslator`, with a stub managed-policy map) exactly as CloudFormation would
expand it, and the result is checked; cfn-lint runs through its Python API.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from cfnlint.config import ManualArgs
from cfnlint.decode.decode import decode_str
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
API_MD = ROOT.parent / "shared" / "API.md"

MODULES = ("gate", "usage", "balance", "admin", "checkout", "webhook", "scheduler")

# The routes of API.md and the function serving each one. Used when ../shared/API.md is
# not there (a clone on its own); when it is, the routes are read from it.
API_ROUTES: dict[tuple[str, str], str] = {
    ("PUT", "/v1/accounts/{account_id}"): "admin",
    ("PUT", "/v1/accounts/{account_id}/members/{user_id}"): "admin",
    ("PUT", "/v1/accounts/{account_id}/plan"): "admin",
    ("POST", "/v1/accounts/{account_id}/grants"): "admin",
    ("GET", "/v1/admin/metrics"): "admin",
    ("POST", "/v1/gate"): "gate",
    ("GET", "/v1/entitlements"): "gate",
    ("POST", "/v1/reservations/{id}/release"): "gate",
    ("POST", "/v1/usage"): "usage",
    ("POST", "/v1/usage/batch"): "usage",
    ("GET", "/v1/balance"): "balance",
    ("GET", "/v1/transactions"): "balance",
    ("GET", "/v1/usage"): "balance",
    ("GET", "/v1/orders"): "balance",
    ("GET", "/v1/catalog"): "balance",
    ("GET", "/v1/prices"): "balance",
    ("GET", "/v1/health"): "balance",
    ("POST", "/v1/checkout"): "checkout",
    ("POST", "/v1/webhooks/stripe"): "webhook",
    ("POST", "/v1/cron/maintenance"): "scheduler",
}
# Routes creditgate serves beyond API.md's list.
EXTRA_ROUTES: dict[tuple[str, str], str] = {
    ("DELETE", "/v1/accounts/{account_id}/members/{user_id}"): "admin",
    ("POST", "/v1/accounts/{account_id}/debits"): "admin",
    ("POST", "/v1/accounts/{account_id}/lift-hold"): "admin",
    ("PUT", "/v1/accounts/{account_id}/allowances"): "admin",
    ("GET", "/v1/accounts/{account_id}/history"): "admin",
    ("GET", "/v1/accounts"): "admin",
    ("GET", "/v1/accounts/{account_id}"): "admin",
    ("POST", "/v1/billing-portal"): "checkout",
}
# Not API routes of their own, but served too: the OpenAPI document and its viewer.
DOC_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "balance",
    ("GET", "/docs"): "balance",
    # Checkout's own return pages and the offline (simulated) payment page.
    ("GET", "/v1/checkout/complete"): "checkout",
    ("GET", "/v1/checkout/canceled"): "checkout",
    ("GET", "/v1/simulated-checkout/{session_id}"): "checkout",
    ("POST", "/v1/simulated-checkout/{session_id}"): "checkout",
}

# Which secrets each function may read (least privilege). Every one of them reaches the
# function only as a reference: <NAME>_SECRET_ARN (Secrets Manager) or <NAME>_PARAM (SSM).
LEDGER = {"DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"}
SECRETS_OF: dict[str, set[str]] = {
    "gate": LEDGER | {"SUPABASE_JWT_SECRET", "CREDITGATE_SERVICE_KEYS"},
    "usage": LEDGER | {"CREDITGATE_SERVICE_KEYS"},
    "balance": LEDGER | {"SUPABASE_JWT_SECRET", "CREDITGATE_SERVICE_KEYS"},
    "admin": LEDGER | {"CREDITGATE_SERVICE_KEYS"},
    "checkout": LEDGER | {"SUPABASE_JWT_SECRET", "CREDITGATE_SERVICE_KEYS", "STRIPE_SECRET_KEY"},
    "webhook": LEDGER | {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"},
    "scheduler": LEDGER | {"CRON_SECRET", "CREDITGATE_NOTICES_WEBHOOK_SECRET"},
}
SECRET_NAMES = set().union(*SECRETS_OF.values())
# Template parameter holding the reference of each secret.
SECRET_PARAMETER = {
    "DATABASE_URL": "DatabaseUrlSecret",
    "SUPABASE_URL": "SupabaseUrlSecret",
    "SUPABASE_SERVICE_ROLE_KEY": "SupabaseServiceRoleKeySecret",
    "SUPABASE_JWT_SECRET": "SupabaseJwtSecretSecret",
    "STRIPE_SECRET_KEY": "StripeSecretKeySecret",
    "STRIPE_WEBHOOK_SECRET": "StripeWebhookSecretSecret",
    "CREDITGATE_SERVICE_KEYS": "ServiceKeysSecret",
    "CRON_SECRET": "CronSecretSecret",
    "CREDITGATE_NOTICES_WEBHOOK_SECRET": "NoticesWebhookSecretSecret",
}
MINIMAL_PARAMETERS = {
    "DatabaseUrlSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:creditgate/prod/database-url-AbCdEf",
    "ServiceKeysSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:creditgate/prod/service-keys-AbCdEf",
}
LINT_REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2", "ap-northeast-1"]

# ---------------------------------------------------------------------------- helpers


def parse_api_routes(text: str) -> dict[tuple[str, str], str]:
    """Routes of API.md: `METHOD /path` inside a '## ... function `name`' section."""
    routes: dict[tuple[str, str], str] = {}
    function: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            found = re.search(r"function `(\w+)`", line)
            function = found.group(1) if found else None
            continue
        if function is None:
            continue
        for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE)\s+(/[A-Za-z0-9_{}./-]*)", line):
            routes[(method, path.rstrip("./"))] = function
    return routes


def expected_routes() -> dict[tuple[str, str], str]:
    if API_MD.is_file():
        routes = parse_api_routes(API_MD.read_text(encoding="utf-8"))
        assert len(routes) >= 15, f"parsed only {len(routes)} routes from {API_MD}: {sorted(routes)}"
    else:
        routes = dict(API_ROUTES)
    return routes


def load_template() -> dict[str, Any]:
    template, errors = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    assert not errors, [str(e) for e in errors]
    # cfn-lint's nodes are dict/str subclasses; make them plain for the translator.
    return json.loads(json.dumps(template))


class _NoManagedPolicies:
    """Stands in for ManagedPolicyLoader (which would call IAM)."""

    def load(self) -> dict[str, str]:
        return {}


def translate(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    template = load_template()
    # What `sam build` + `sam package` do: the local CodeUri becomes an S3 object.
    assert template["Globals"]["Function"]["CodeUri"] == "."
    template["Globals"]["Function"]["CodeUri"] = "s3://creditgate-artifacts/creditgate.zip"
    values = {**MINIMAL_PARAMETERS, **(parameters or {})}
    try:
        return transform(template, values, _NoManagedPolicies())
    except InvalidDocumentException as error:  # pragma: no cover - shows the causes
        pytest.fail("SAM transform failed: " + "; ".join(str(c) for c in error.causes))


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    # The translator asks boto3 for the region (no call is made).
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def cfn() -> dict[str, Any]:
    return translate()


def resources_of_type(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in cfn["Resources"].items() if res["Type"] == kind}


def module_of_function(cfn: dict[str, Any]) -> dict[str, str]:
    """Logical id of each Lambda function -> its entry module (from the handler)."""
    out = {}
    for name, res in resources_of_type(cfn, "AWS::Lambda::Function").items():
        handler = res["Properties"]["Handler"]
        found = re.fullmatch(r"functions\.(\w+)\.handler", handler)
        assert found, f"{name}: handler {handler!r} is not functions.<module>.handler"
        out[name] = found.group(1)
    return out


def function_by_module(cfn: dict[str, Any]) -> dict[str, str]:
    return {module: name for name, module in module_of_function(cfn).items()}


def template_routes(cfn: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> logical id of the function integrated, from the HTTP API body."""
    apis = resources_of_type(cfn, "AWS::ApiGatewayV2::Api")
    assert len(apis) == 1, f"expected one HTTP API, found {sorted(apis)}"
    (api,) = apis.values()
    assert api["Properties"].get("ProtocolType", "HTTP") == "HTTP"
    routes = {}
    for path, operations in api["Properties"]["Body"]["paths"].items():
        for method, operation in operations.items():
            uri = operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            found = re.search(r"\$\{(\w+)\.Arn\}", uri)
            assert found, f"{method.upper()} {path}: integration {uri!r} is not a Lambda function"
            assert operation["x-amazon-apigateway-integration"]["payloadFormatVersion"] == "2.0"
            routes[(method.upper(), path)] = found.group(1)
    return routes


def evaluate(node: Any, parameters: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """Resolve Ref to parameters, Fn::If and AWS::NoValue, as CloudFormation would."""
    no_value = object()

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Ref"} and value["Ref"] == "AWS::NoValue":
                return no_value
            if set(value) == {"Ref"} and value["Ref"] in parameters:
                return parameters[value["Ref"]]
            if set(value) == {"Fn::If"}:
                name, then, otherwise = value["Fn::If"]
                return walk(then if conditions[name] else otherwise)
            out = {}
            for key, item in value.items():
                resolved = walk(item)
                if resolved is not no_value:
                    out[key] = resolved
            return out
        if isinstance(value, list):
            return [r for r in (walk(item) for item in value) if r is not no_value]
        return value

    result = walk(node)
    return None if result is no_value else result


def evaluate_conditions(cfn: dict[str, Any], parameters: dict[str, Any]) -> dict[str, bool]:
    definitions = cfn.get("Conditions", {})
    done: dict[str, bool] = {}

    def value(expr: Any) -> Any:
        if isinstance(expr, dict):
            ((op, args),) = expr.items()
            if op == "Ref":
                return str(parameters[args])
            if op == "Condition":
                return condition(args)
            if op == "Fn::Equals":
                return str(value(args[0])) == str(value(args[1]))
            if op == "Fn::Not":
                return not value(args[0])
            if op == "Fn::And":
                return all(value(a) for a in args)
            if op == "Fn::Or":
                return any(value(a) for a in args)
            raise AssertionError(f"unsupported condition function {op}")
        return expr

    def condition(name: str) -> bool:
        if name not in done:
            done[name] = bool(value(definitions[name]))
        return done[name]

    for name in definitions:
        condition(name)
    return done


def all_parameters(cfn_source: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    values = {name: str(p.get("Default", "")) for name, p in cfn_source["Parameters"].items()}
    values.update(MINIMAL_PARAMETERS)
    values.update(given)
    return values


def deployed_view(given: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The transformed template and its resources with conditions resolved for `given`."""
    cfn = translate(given)
    parameters = all_parameters(load_template(), given)
    conditions = evaluate_conditions(cfn, parameters)
    resources = {
        name: evaluate(res, parameters, conditions)
        for name, res in cfn["Resources"].items()
        if conditions.get(res.get("Condition", ""), True)
    }
    return cfn, resources


def policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in role["Properties"].get("Policies", []):
        if "PolicyDocument" in policy:  # unresolved Fn::If entries are skipped
            statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_text(resource: Any) -> str:
    """A policy Resource as text: Fn::Sub templates with their variables filled in."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        if isinstance(sub, list):
            text, variables = sub
            for key, val in variables.items():
                text = text.replace("${" + key + "}", str(val))
            return text
        return sub
    return json.dumps(resource) if isinstance(resource, dict) else str(resource)


# ---------------------------------------------------------------------------- routes


def test_api_md_parser_reads_the_contract() -> None:
    sample = (
        "## Gate — function `gate`\n\n`POST /v1/gate` (service key)\n"
        "`GET /v1/entitlements` (user JWT, or service with `?account_id=`)\n"
        "## Errors\nnothing `GET /nowhere` here\n"
        "## Balance and history — function `balance`\n* `GET /v1/transactions?limit=50&cursor=` → x\n"
    )
    assert parse_api_routes(sample) == {
        ("POST", "/v1/gate"): "gate",
        ("GET", "/v1/entitlements"): "gate",
        ("GET", "/v1/transactions"): "balance",
    }
    if API_MD.is_file():
        assert parse_api_routes(API_MD.read_text(encoding="utf-8")) == API_ROUTES, (
            "API.md and the hard-coded route list of this test disagree: update API_ROUTES"
        )


def test_every_api_route_is_wired_to_the_function_serving_it(cfn: dict[str, Any]) -> None:
    routes = template_routes(cfn)
    modules = module_of_function(cfn)
    served = {route: modules[function] for route, function in routes.items()}
    expected = {**expected_routes(), **EXTRA_ROUTES, **DOC_ROUTES}

    missing = sorted(set(expected) - set(served))
    assert not missing, f"routes of API.md missing from the HTTP API: {missing}"
    wrong = {f"{m} {p}": (served[(m, p)], want) for (m, p), want in expected.items() if served[(m, p)] != want}
    assert not wrong, f"routes wired to the wrong function (got, want): {wrong}"
    extra = sorted(set(served) - set(expected))
    assert not extra, f"routes in the template that API.md does not list: {extra}"


def test_every_route_of_the_app_is_deployed(cfn: dict[str, Any]) -> None:
    """A route added to the app but not to the template would exist locally and 404 on AWS."""
    from functions.local import build_app

    deployed = set(template_routes(cfn))
    from fastapi.routing import APIRoute

    def api_routes(routes: list[Any]) -> list[APIRoute]:
        # Included routers are wrapped (FastAPI 0.16x): their own routes are inside.
        found: list[APIRoute] = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):
                found += api_routes(route.original_router.routes)
        return found

    app_routes = {
        (method, route.path) for route in api_routes(build_app().routes) for method in route.methods if method != "HEAD"
    }
    assert len(app_routes) > 20
    # The template names path parameters as API.md does; compare shapes, not names.
    shape = lambda path: re.sub(r"\{[^}]+\}", "{}", path)  # noqa: E731
    # Vercel's cron calls GET; on AWS EventBridge invokes the scheduler function itself.
    not_on_aws = {("GET", "/v1/cron/maintenance")}
    deployed_shapes = {(method, shape(path)) for method, path in deployed}
    missing = sorted(r for r in app_routes - not_on_aws if (r[0], shape(r[1])) not in deployed_shapes)
    assert not missing, f"routes of the app that the template does not deploy: {missing}"


def test_one_http_api_with_lambda_permissions_for_every_function(cfn: dict[str, Any]) -> None:
    stages = resources_of_type(cfn, "AWS::ApiGatewayV2::Stage")
    assert [s["Properties"]["StageName"] for s in stages.values()] == ["$default"]
    (stage,) = stages.values()
    assert "DestinationArn" in stage["Properties"]["AccessLogSettings"]
    permitted = {
        p["Properties"]["FunctionName"]["Ref"]
        for p in resources_of_type(cfn, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    }
    assert permitted == set(module_of_function(cfn))


# ---------------------------------------------------------------------------- handlers


def test_seven_functions_one_per_entry_module(cfn: dict[str, Any]) -> None:
    assert sorted(module_of_function(cfn).values()) == sorted(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_handler_points_to_an_existing_module(cfn: dict[str, Any], module: str) -> None:
    assert module in function_by_module(cfn)
    path = ROOT / "functions" / f"{module}.py"
    if not path.is_file():
        pytest.skip(f"functions/{module}.py is not written yet")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    # A `with` block at module level (init_phase) binds module-level names too.
    nodes = [n for top in tree.body for n in (top.body if isinstance(top, ast.With) else [top])]
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    assert "handler" in names, f"functions/{module}.py defines no module-level `handler`"


def test_runtime_architecture_and_code_bundle(cfn: dict[str, Any]) -> None:
    functions = resources_of_type(cfn, "AWS::Lambda::Function")
    assert {f["Properties"]["Runtime"] for f in functions.values()} == {"python3.12"}
    assert {tuple(f["Properties"]["Architectures"]) for f in functions.values()} in ({("arm64",)}, {("x86_64",)})
    # One bundle for all: the repository root, with functions/ at its top.
    assert len({json.dumps(f["Properties"]["Code"], sort_keys=True) for f in functions.values()}) == 1
    assert (ROOT / "requirements.txt").is_file(), "sam build installs the root requirements.txt"
    for fn in functions.values():
        group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert cfn["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_requirements_list_the_runtime_dependencies() -> None:
    names = set()
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found = re.match(r"[A-Za-z0-9_.-]+(\[[^\]]*\])?", line)
            assert found, line
            names.add(found.group(0).lower())
            assert "==" not in line and "<" not in line, f"lower bounds only: {line}"
    for required in (
        "fastapi",
        "mangum",
        "pydantic",
        "pydantic-settings",
        "psycopg[binary]",
        "psycopg-pool",
        "pyjwt[crypto]",
        "stripe",
    ):
        assert required in names, f"requirements.txt lacks {required}"
    assert names & {"supabase", "postgrest"}


# Runtime dependencies of pyproject.toml that the deployed functions do not need.
LOCAL_ONLY = {"uvicorn"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_follow_pyproject() -> None:
    """sam build and Vercel read requirements.txt; a dependency missing there breaks the cold start."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml yet")
    import tomllib

    declared = {_name(r) for r in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]}
    listed = {
        _name(line.split("#", 1)[0])
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.split("#", 1)[0].strip()
    }
    assert declared - LOCAL_ONLY <= listed, f"add to requirements.txt: {sorted(declared - LOCAL_ONLY - listed)}"
    assert listed <= declared, f"not a dependency in pyproject.toml: {sorted(listed - declared)}"


# ---------------------------------------------------------------------------- scheduler


def test_scheduler_has_the_schedule_and_the_dead_letter_queue(cfn: dict[str, Any]) -> None:
    scheduler = function_by_module(cfn)["scheduler"]
    schedules = resources_of_type(cfn, "AWS::Scheduler::Schedule")
    rules = resources_of_type(cfn, "AWS::Events::Rule")
    targets = [s["Properties"]["Target"] for s in schedules.values()]
    targets += [t for r in rules.values() for t in r["Properties"].get("Targets", [])]
    targets = [t for t in targets if t["Arn"] == {"Fn::GetAtt": [scheduler, "Arn"]}]
    assert len(targets) == 1, "exactly one schedule must invoke the scheduler function"
    (target,) = targets

    queue_arn = target["DeadLetterConfig"]["Arn"]
    queue = queue_arn["Fn::GetAtt"][0]
    assert cfn["Resources"][queue]["Type"] == "AWS::SQS::Queue"

    (schedule,) = schedules.values()
    expression = schedule["Properties"]["ScheduleExpression"]
    assert expression == {"Ref": "ScheduleExpression"}
    assert load_template()["Parameters"]["ScheduleExpression"]["Default"] == "rate(15 minutes)"
    payload = json.loads(target["Input"])
    assert "requestContext" not in payload, "the scheduled event must not look like an HTTP one"

    # Function errors of the asynchronous invocation land in the same queue ...
    (invoke_config,) = resources_of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke_config["Properties"]["FunctionName"] == {"Ref": scheduler}
    assert invoke_config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    # ... and both senders may send there.
    role = cfn["Resources"][cfn["Resources"][scheduler]["Properties"]["Role"]["Fn::GetAtt"][0]]
    schedule_role = cfn["Resources"][target["RoleArn"]["Fn::GetAtt"][0]]
    for some_role in (role, schedule_role):
        assert any(
            "sqs:SendMessage" in as_list(s["Action"]) and s["Resource"] == queue_arn
            for s in policy_statements(some_role)
            if isinstance(s, dict) and "Action" in s
        )
    # Someone hears about it.
    alarms = resources_of_type(cfn, "AWS::CloudWatch::Alarm").values()
    assert any(
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}} in a["Properties"]["Dimensions"]
        for a in alarms
    )


def test_scheduler_concurrency_is_limited() -> None:
    _, resources = deployed_view({})
    scheduler = next(
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == "functions.scheduler.handler"
    )
    assert 1 <= int(scheduler["Properties"]["ReservedConcurrentExecutions"]) <= 5
    others = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function" and r is not scheduler]
    assert all("ReservedConcurrentExecutions" not in r["Properties"] for r in others)


def test_api_5xx_alarm(cfn: dict[str, Any]) -> None:
    (api,) = resources_of_type(cfn, "AWS::ApiGatewayV2::Api")
    assert any(
        a["Properties"]["Namespace"] == "AWS/ApiGateway"
        and a["Properties"]["MetricName"] == "5xx"
        and {"Name": "ApiId", "Value": {"Ref": api}} in a["Properties"]["Dimensions"]
        for a in resources_of_type(cfn, "AWS::CloudWatch::Alarm").values()
    )


def test_outputs_give_the_api_and_webhook_urls() -> None:
    outputs = translate()["Outputs"]
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].startswith("https://${HttpApi}.execute-api.")
    assert outputs["StripeWebhookUrl"]["Value"]["Fn::Sub"].endswith("/v1/webhooks/stripe")


# ---------------------------------------------------------------------------- secrets

SECRET_LIKE = re.compile(r"sk_(live|test)_|rk_(live|test)_|whsec_|postgres(ql)?://|eyJ[A-Za-z0-9_-]{10,}")


def test_no_function_has_inline_secrets(cfn: dict[str, Any]) -> None:
    for name, fn in resources_of_type(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"].get("Environment", {}).get("Variables", {})
        inline = sorted(SECRET_NAMES & set(variables))
        assert not inline, f"{name} gets secret values in its environment: {inline}"
        text = json.dumps(variables)
        assert not SECRET_LIKE.search(text), f"{name}: a secret-looking literal in the environment"
    source = load_template()
    for pname, parameter in source["Parameters"].items():
        assert not SECRET_LIKE.search(str(parameter.get("Default", ""))), pname
    for pname in SECRET_PARAMETER.values():
        assert source["Parameters"][pname].get("Default", "") == "", f"{pname} must have no default value"


ALL_SECRETS_SM = {
    param: f"arn:aws:secretsmanager:us-east-1:123456789012:secret:creditgate/prod/{name.lower()}-AbCdEf"
    for name, param in SECRET_PARAMETER.items()
}
ALL_SECRETS_SSM = {
    "SecretStore": "ssm",
    **{param: f"/creditgate/prod/{name.lower()}" for name, param in SECRET_PARAMETER.items()},
}


@pytest.mark.parametrize("given", [ALL_SECRETS_SM, ALL_SECRETS_SSM], ids=["secretsmanager", "ssm"])
def test_each_function_reads_exactly_its_secrets(given: dict[str, str]) -> None:
    use_ssm = given.get("SecretStore") == "ssm"
    suffix, other_suffix = ("_PARAM", "_SECRET_ARN") if use_ssm else ("_SECRET_ARN", "_PARAM")
    cfn, resources = deployed_view(given)
    for logical_id, module in module_of_function(cfn).items():
        fn = resources[logical_id]
        variables = fn["Properties"]["Environment"]["Variables"]
        referenced = {k.removesuffix(suffix) for k in variables if k.endswith(suffix)}
        assert referenced == SECRETS_OF[module], f"{module}: secret references {sorted(referenced)}"
        assert not [k for k in variables if k.endswith(other_suffix)], f"{module}: both stores referenced"
        for name in referenced:
            assert variables[name + suffix] == given[SECRET_PARAMETER[name]]

        role = resources[fn["Properties"]["Role"]["Fn::GetAtt"][0]]
        readable = set()
        for statement in policy_statements(role):
            actions = as_list(statement["Action"])
            if "secretsmanager:GetSecretValue" in actions or "ssm:GetParameter" in actions:
                readable.update(resource_text(r) for r in as_list(statement["Resource"]))
            assert not any(a in ("*", "secretsmanager:*", "ssm:*") for a in actions), module
        if use_ssm:
            wanted = {
                f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{given[SECRET_PARAMETER[n]]}"
                for n in SECRETS_OF[module]
            }
        else:
            wanted = {given[SECRET_PARAMETER[n]] for n in SECRETS_OF[module]}
        assert readable == wanted, f"{module} may read {sorted(readable)}, should read {sorted(wanted)}"


def test_unset_optional_secrets_leave_no_reference_and_no_permission() -> None:
    cfn, resources = deployed_view({})
    for logical_id, module in module_of_function(cfn).items():
        fn = resources[logical_id]
        variables = fn["Properties"]["Environment"]["Variables"]
        refs = {k.removesuffix("_SECRET_ARN") for k in variables if k.endswith("_SECRET_ARN")}
        assert refs == SECRETS_OF[module] & {"DATABASE_URL", "CREDITGATE_SERVICE_KEYS"}
        role = resources[fn["Properties"]["Role"]["Fn::GetAtt"][0]]
        readable = {
            resource_text(r)
            for s in policy_statements(role)
            if "secretsmanager:GetSecretValue" in as_list(s["Action"])
            for r in as_list(s["Resource"])
        }
        assert readable == {MINIMAL_PARAMETERS[SECRET_PARAMETER[n]] for n in refs}


def test_cors_follows_the_allowed_origins() -> None:
    def cors(given: dict[str, str]) -> Any:
        _, resources = deployed_view(given)
        (api,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
        return api["Properties"]["Body"].get("x-amazon-apigateway-cors")

    assert cors({}) is None
    configured = cors({"AllowedOrigins": "https://app.example.com,https://example.com"})
    assert configured["allowOrigins"] == {"Fn::Split": [",", "https://app.example.com,https://example.com"]}
    assert "authorization" in configured["allowHeaders"]


# ---------------------------------------------------------------------------- lint


def test_cfn_lint_reports_no_errors_or_warnings() -> None:
    matches = lint(
        TEMPLATE.read_text(encoding="utf-8"),
        config=ManualArgs(regions=LINT_REGIONS, include_checks=["I"], include_experimental=True),
    )
    problems = [m for m in matches if m.rule.severity.lower() in ("error", "warning")]
    assert not problems, "\n".join(f"{m.rule.id} line {m.linenumber}: {m.message}" for m in problems)
