"""RabbitMQ's users: every role connects as a user of its own, with only the permissions it needs.

The chart renders RabbitMQ's definitions (imported on every boot) with an administrator, whom no
Warren pod connects as, and one user per role (``warren.rabbitmq.users`` in _helpers.tpl). Here:
- rendered: which Secret and which user each container gets, that only the RabbitMQ pods hold the
  administrator's credentials and only the operator the monitoring user's, and, against every
  exchange and queue name the deployed pools really use (``warren.topology``), what each user's
  three regular expressions let it configure, write and read;
- in Docker (marked docker): the test broker image booted as a production pod is (conftest's
  ``rabbitmq_node``: the setup init container's definitions and passwords, run here), then each
  user, through Warren's own clients, does what its role does (the topology step declares, a
  payments worker consumes, emits, retries, dead-letters and replies, the API publishes and asks,
  the operator reads the management API) and is refused what it must not do (AMQP 403).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions as px
import pytest
from helm_python import HelmRenderError
from pydantic import SecretStr

from tests.chart.rabbitmq import Node, chart_pool, decoded, definitions, user_secret, users
from tests.chart.rendering import RELEASE, VALUE_SETS, Render, render
from tests.support.docker import eventually
from warren import Pool, TaskContext, readiness, topology
from warren.broker import Session
from warren.config import Settings, settings_from_env
from warren.dlq import DeadLetters, Selection
from warren.errors import PermanentError, RetryableError
from warren.messages import Delivery
from warren.producer import Producer
from warren.worker.pool import load_pool
from warren.worker.runtime import Worker
from warren_operator import management
from warren_operator.management import ManagementConfig, MetricsError, fetch_consumers, fetch_queue_stats
from warren_shop.api.queues import pool_queues

ADMIN = "warren"
BUNDLED = [name for name, values in VALUE_SETS.items() if values.get("rabbitmq", {}).get("enabled", True)]
BROKER_FILES = ("WARREN_BROKER_URL_FILE", "WARREN_BROKER_PASSWORD_FILE")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def role_user(o: dict[str, Any], container: dict[str, Any]) -> str | None:
    """The user a container must connect as, by what it is; None for those that do not connect."""
    component = o["metadata"]["labels"]["app.kubernetes.io/component"]
    if container["name"] == "db-upgrade":  # the shop's database only
        return None
    if component == "worker":
        pool = o["metadata"]["labels"]["warren/pool"]
        return "topology" if container["name"] == "topology" else f"worker-{pool}"
    if component == "api":
        return "api"
    if component == "test" and container["name"] != "api-ready":
        return "helm-test"
    return None


def secrets_of(spec: dict[str, Any]) -> dict[str, str]:
    """Volume name -> the Secret it mounts (each source of a projected volume as NAME[i])."""
    found = {}
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            found[volume["name"]] = volume["secret"]["secretName"]
        for i, source in enumerate(volume.get("projected", {}).get("sources", [])):
            if "secret" in source:
                found[f"{volume['name']}[{i}]"] = source["secret"]["name"]
    return found


def admin_secret(r: Render) -> str:
    return r.values["rabbitmq"]["auth"]["existingSecret"] or f"{RELEASE}-rabbitmq"


# -- Rendered ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", BUNDLED)
def test_each_role_connects_as_its_own_user(renders, value_set: str) -> None:
    r = renders[value_set]
    existing = r.values["rabbitmq"]["auth"]["usersExistingSecret"]
    seen = set()
    for o, spec, c in r.containers():
        user = role_user(o, c)
        env = env_of(c)
        where = (o["metadata"]["name"], c["name"])
        if user is None:
            assert not set(BROKER_FILES) & env.keys(), where
            continue
        seen.add(user)
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/warren/broker"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        if existing:  # the user's key of usersExistingSecret, the user's name beside it
            assert env["WARREN_BROKER_USERNAME"] == user, where
            assert env["WARREN_BROKER_PASSWORD_FILE"] == "/etc/warren/broker/password", where
            assert volume["secret"] == {"secretName": existing, "items": [{"key": user, "path": "password"}],
                                        "defaultMode": 0o440}, where
        else:  # the user's own Secret, the whole URL
            assert "WARREN_BROKER_USERNAME" not in env and env["WARREN_BROKER_URL_FILE"] == "/etc/warren/broker/url"
            assert volume["secret"] == {"secretName": f"{RELEASE}-broker-{user}",
                                        "items": [{"key": "url", "path": "url"}], "defaultMode": 0o440}, where
    # Every user the chart defines is one a role connects as (the operator's reads the management API).
    assert seen | {ADMIN, "operator"} >= set(users(r)), value_set
    assert seen <= set(users(r))


@pytest.mark.parametrize("value_set", BUNDLED)
def test_only_rabbitmq_holds_the_administrator_and_only_the_operator_the_monitoring_user(
        renders, value_set: str) -> None:
    """No Warren pod mounts the administrator's Secret, none but RabbitMQ's the Secret of another
    role's user, and the operator's monitoring password reaches the operator only through its
    Role's single `get` (the WorkerAutoscalers name the Secret)."""
    r = renders[value_set]
    existing = r.values["rabbitmq"]["auth"]["usersExistingSecret"]
    for o, spec in r.pod_specs():
        mounted = secrets_of(spec)
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "rabbitmq":
            assert admin_secret(r) in mounted.values()
            continue
        assert admin_secret(r) not in mounted.values(), o["metadata"]["name"]
        allowed = {role_user(o, c) for c in spec.get("initContainers", []) + spec["containers"]} - {None}
        for volume in spec["volumes"]:
            if existing and volume.get("secret", {}).get("secretName") == existing:
                assert {item["key"] for item in volume["secret"]["items"]} <= allowed, o["metadata"]["name"]
        if not existing:
            brokers = {secret for secret in mounted.values() if secret.startswith(f"{RELEASE}-broker-")}
            assert brokers <= {f"{RELEASE}-broker-{user}" for user in allowed}, o["metadata"]["name"]
    tagged = {user: spec["tags"] for user, spec in users(r).items() if spec["tags"]}
    expected = {ADMIN: ["administrator"]}
    if "operator" in users(r):
        expected["operator"] = ["monitoring"]
    if r.values["rabbitmq"]["replicas"] > 1:
        expected["topology"] = ["monitoring"]  # GET /api/nodes: --wait-for-nodes
    if r.values["api"]["enabled"] and r.values["api"]["adminToken"]["existingSecret"]:
        expected["api"] = ["management"]  # the operations API's queue numbers
    assert tagged == expected
    if r.values["operator"]["enabled"]:
        own = r.values["operator"]["management"]["existingSecret"] or existing or f"{RELEASE}-broker-operator"
        assert {a["spec"]["managementSecretRef"]["name"] for a in r.of_kind("WorkerAutoscaler")} <= {own}
        (rule,) = [rule for rule in r.get("Role", f"{RELEASE}-operator")["rules"] if rule["resources"] == ["secrets"]]
        assert rule["resourceNames"] == [own] and rule["verbs"] == ["get"]


def test_the_users_and_their_permissions(renders) -> None:
    """The default install's users, exactly: vhost "/" (checked by ``users``), three regular
    expressions each, "^$" for nothing."""
    nothing = "^$"
    assert users(renders["default"]) == {
        ADMIN: {"tags": ["administrator"], "configure": ".*", "write": ".*", "read": ".*"},
        "topology": {"tags": [], "configure": r"^warren\.", "write": r"^(warren\..*|amq\.default)$",
                     "read": r"^warren\."},
        **{f"worker-{pool}": {"tags": [], "configure": nothing,
                              "write": r"^(warren\.(tasks|events|dlx)|amq\.default)$",
                              "read": rf"^warren\.{pool}(\.suspect)?$"}
           for pool in ("orders", "inventory", "payments", "shipping", "email", "sms", "analytics", "audit")},
        "api": {"tags": [], "configure": nothing, "write": r"^warren\.tasks$", "read": r"^amq\.rabbitmq\.reply-to$"},
        "helm-test": {"tags": [], "configure": r"^warren-test\.",
                      "write": r"^(warren-test\..*|warren\.tasks|amq\.default)$",
                      "read": r"^(warren-test\..*|amq\.rabbitmq\.reply-to)$"},
    }
    assert definitions(renders["default"])["vhosts"] == [{"name": "/"}]
    notes = renders["default"].notes
    assert "no Warren pod connects as it" in notes and "api, helm-test, topology, worker-analytics" in notes


def test_each_user_reaches_exactly_the_names_its_role_uses(renders) -> None:
    """RabbitMQ matches a permission's regular expression anywhere in a name (re:run, unanchored:
    Python's re.search). Over every exchange and queue name the e2e install's pools (the shop's,
    the selftest pool) and the helm test's namespace really declare: who may configure, write and
    read which."""
    r = renders["e2e"]
    settings = settings_from_env(r.configmap)
    pools = {name: chart_pool(r, name) for name, spec in r.values["pools"].items() if spec["enabled"]}
    assert all(pool.name == name for name, pool in pools.items())  # the users are named after the pools' keys
    deployed = names(topology.build(settings, pools=[p.spec for p in pools.values()]))
    test = names(topology.build(settings.model_copy(update={"namespace": "warren-test"}),
                                pools=[load_pool("warren.testing.selftest:pool").spec]))
    default, reply_to = "amq.default", "amq.rabbitmq.reply-to"
    every = deployed | test | {default, reply_to, "amq.topic", "amq.direct", "amq.fanout"}
    permissions = users(r)

    def reach(user: str, permission: str) -> set[str]:
        return {name for name in every if re.search(permissions[user][permission], name)}

    assert reach("topology", "configure") == reach("topology", "read") == deployed
    assert reach("topology", "write") == deployed | {default}  # dead-lettering through "" is a write on it
    for pool in pools:
        user, queue = f"worker-{pool}", f"warren.{pool}"
        assert reach(user, "configure") == set(), user
        assert reach(user, "read") == {queue, f"{queue}.suspect"}, user
        assert reach(user, "write") == {"warren.tasks", "warren.events", "warren.dlx", default}, user
    assert (reach("api", "configure"), reach("api", "write"), reach("api", "read")) == (
        set(), {"warren.tasks"}, {reply_to})
    assert reach("operator", "configure") == reach("operator", "write") == reach("operator", "read") == set()
    assert reach("helm-test", "configure") == test
    assert reach("helm-test", "write") == test | {"warren.tasks", default}
    assert reach("helm-test", "read") == test | {reply_to}


def test_with_the_operations_api_the_api_user_also_reads_dead_letters_and_replays(renders) -> None:
    """``api.adminToken`` turns on the operations API, which does what `warren dlq` does: its user
    may also take from the deployed pools' dead-letter queues and republish through the default
    exchange to a work queue, and nothing else more."""
    r = renders["monitoring"]
    settings = settings_from_env(r.configmap)
    pools = [chart_pool(r, name).spec for name, spec in r.values["pools"].items() if spec["enabled"]]
    topo = topology.build(settings, pools=pools)
    every = names(topo) | {"amq.default", "amq.rabbitmq.reply-to", "amq.topic"}
    api = users(r)["api"]

    def reach(permission: str) -> set[str]:
        return {name for name in every if re.search(api[permission], name)}

    assert reach("configure") == set()
    assert reach("write") == {"warren.tasks", "amq.default"}
    assert reach("read") == {q.name for q in topo.queues if q.name.endswith(".dlq")} | {"amq.rabbitmq.reply-to"}
    assert api["tags"] == ["management"]


def names(topo: topology.Topology) -> set[str]:
    return {e.name for e in topo.exchanges} | {q.name for q in topo.queues}


def test_the_workers_only_check_their_topology_and_the_helm_test_worker_declares(renders) -> None:
    r = renders["default"]
    assert r.configmap["WARREN_DECLARE_TOPOLOGY"] == "false"
    assert settings_from_env(r.configmap).declare_topology is False
    (sidecar,) = r.pod("Pod", f"{RELEASE}-test-broker")["initContainers"]
    assert env_of(sidecar)["WARREN_DECLARE_TOPOLOGY"] == "true"


def test_a_new_pool_gives_the_broker_a_new_user_and_restarts_it(chart, renders) -> None:
    """Definitions are imported at boot: a new user (a pool enabled) rolls the RabbitMQ pods."""
    def checksum(r: Render) -> str:
        annotations = r.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    selftest = {"enabled": True, "target": "warren.testing.selftest:pool"}
    more = render(chart, "default", {"pools": {"selftest": selftest}})
    assert "worker-selftest" in users(more) and "worker-selftest" not in users(renders["default"])
    assert checksum(more) != checksum(renders["default"])


def test_the_administrator_cannot_take_a_roles_user_name(chart) -> None:
    with pytest.raises(HelmRenderError, match=r"rabbitmq\.auth\.username: \\?\"api\\?\" is the name of a role's user"):
        chart.render({"rabbitmq": {"auth": {"username": "api"}}}, name=RELEASE, namespace="warren")


def test_no_password_in_a_configmap(renders) -> None:
    r = renders["production"]
    for user in definitions(r)["users"]:
        assert re.fullmatch(r"@@[a-z-]+@@", user["password"]), user["name"]
    passwords = {value for secret in r.of_kind("Secret") for key, value in decoded(secret).items()
                 if key in ("password", "rabbitmq-password")}
    assert len(passwords) == len(users(r))
    texts = [text for configmap in r.of_kind("ConfigMap") for text in configmap["data"].values()]
    assert f"{RELEASE}-rabbitmq-config" in {c["metadata"]["name"] for c in r.of_kind("ConfigMap")}
    assert not [p for p in passwords for text in texts if p in text]


# -- In Docker: each user against a real broker ----------------------------------------------


def as_user(settings: Settings, url: str, **changes: object) -> Settings:
    """``settings`` connecting with ``url`` (a user's credentials)."""
    return settings.model_copy(update={"broker_url": SecretStr(url), **changes})


def password(node: Node, user: str) -> str:
    if user == ADMIN:
        return decoded(node.render.get("Secret", f"{RELEASE}-rabbitmq"))["rabbitmq-password"]
    return user_secret(node.render, user)["password"]


def refused(url: str, action: Callable[[Any], object]) -> str:
    """What the broker says to ``action`` on a fresh channel of ``url``'s user: it must close the
    channel with 403 ACCESS_REFUSED."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # a refused publish then fails here, not later
        with pytest.raises(px.ChannelClosedByBroker) as closed:
            action(channel)
        assert closed.value.reply_code == 403, closed.value
        return str(closed.value.reply_text)
    finally:
        if connection.is_open:
            connection.close()


def publish(exchange: str, routing_key: str) -> Callable[[Any], object]:
    return lambda channel: channel.basic_publish(exchange, routing_key, b"{}")


def consume(queue: str) -> Callable[[Any], object]:
    return lambda channel: channel.basic_consume(queue, lambda *_: None)


@pytest.fixture(scope="module")
def applied(rabbitmq_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The production pools' topology, applied as the workers' topology step does: as the topology
    user, after waiting for the nodes through the management API (its "monitoring" tag). Returns
    the settings every role here shares (the ConfigMap's), without credentials."""
    r = rabbitmq_node.render
    health = tmp_path_factory.mktemp("health") / "warren-health"
    base = settings_from_env({**r.configmap, "WARREN_HEALTH_FILE": str(health)})
    as_topology = as_user(base, rabbitmq_node.url("topology"))
    deadline = time.monotonic() + 60
    assert readiness.wait_for_nodes(as_topology, nodes=1, management_port=15672, deadline=deadline) == 1
    pools = [chart_pool(r, name).spec for name, spec in r.values["pools"].items() if spec["enabled"]]
    session = readiness.open_session(as_topology, name="warren-topology", deadline=deadline)
    try:
        for _ in range(2):  # idempotent: an init container may run again
            topology.apply(session, topology.build(as_topology, pools=pools))
    finally:
        session.close()
    return base


# A stand-in for the shop's payments pool (the same queues), with tasks that exercise every way a
# worker publishes.
payments = Pool("payments")


@payments.task(schema=None)
def quote(payload: Any, ctx: TaskContext) -> dict[str, object]:
    return {"cents": 500, "worker": ctx.worker}


@payments.task(schema=None)
def charge(payload: Any, ctx: TaskContext) -> None:
    if ctx.attempt == 1:
        raise RetryableError("card network busy")  # parked in warren.payments.retry.* (default exchange)
    ctx.emit("payment.completed", payload)  # warren.events
    ctx.send_to("shipping", "ship", payload)  # warren.tasks


@payments.task(schema=None)
def refund(payload: Any, ctx: TaskContext) -> None:
    raise PermanentError("refunds are not allowed")  # dead-lettered through warren.dlx


@pytest.fixture(scope="module")
def payments_worker(rabbitmq_node: Node, applied: Settings) -> Iterator[Worker]:
    """Warren's worker runtime, in a thread, as the payments pool's user, as the chart runs it:
    it only checks its topology (passive declares), and consumes warren.payments and its suspect
    queue."""
    settings = as_user(applied, rabbitmq_node.url("worker-payments"), worker_name="payments-1")
    assert settings.declare_topology is False
    worker = Worker(payments, settings)
    thread = threading.Thread(target=worker.run, name="payments-worker", daemon=True)
    thread.start()
    health = settings.health_file
    assert health is not None
    eventually(lambda: health.exists() or not thread.is_alive(), timeout=30, what="the payments worker consumes")
    assert thread.is_alive(), "the payments worker stopped"
    yield worker
    worker.stop()
    thread.join(timeout=30)


def observe(node: Node, queue: str, message_type: str, *, timeout: float = 20) -> Delivery:
    """The first message of ``message_type`` to arrive in ``queue`` (others are taken and dropped),
    read as the administrator: the test's eyes, no role's."""
    url = f"amqp://{ADMIN}:{password(node, ADMIN)}@{node.host}:5672/%2F"
    session = Session.open(Settings(_env_file=None, broker_url=SecretStr(url)), name="observer")
    try:
        deadline = time.monotonic() + timeout
        while True:
            delivery = session.get(queue)
            if delivery is None:
                assert time.monotonic() < deadline, f"no {message_type} arrived in {queue} within {timeout} s"
                session.run(0.1)
                continue
            session.ack(delivery.delivery_tag)
            if delivery.type == message_type:
                return delivery
    finally:
        session.close()


@pytest.mark.docker
def test_the_broker_holds_exactly_the_charts_users(rabbitmq_node: Node) -> None:
    """Imported from the definitions on boot: no guest, no other user, these tags and permissions."""
    expected = users(rabbitmq_node.render)
    listed = json.loads(rabbitmq_node.rabbitmqctl("list_users", "--formatter", "json"))
    assert {u["user"]: sorted(u["tags"]) for u in listed} == {user: sorted(u["tags"]) for user, u in expected.items()}
    permissions = json.loads(rabbitmq_node.rabbitmqctl("list_permissions", "--formatter", "json"))
    assert {p["user"]: (p["configure"], p["write"], p["read"]) for p in permissions} == {
        user: (u["configure"], u["write"], u["read"]) for user, u in expected.items()}


@pytest.mark.docker
def test_a_payments_worker_does_its_work_as_its_own_user(rabbitmq_node: Node, applied: Settings,
                                                         payments_worker: Worker) -> None:
    """It consumes its queue, and publishes an event and a task, a retry through the default
    exchange, and a dead letter through warren.dlx; all as worker-payments."""
    with Producer(as_user(applied, rabbitmq_node.url("api")), name="warren-api") as producer:
        producer.publish("payments", "charge", {"order_id": "o-1"}, message_id="charge-1")
        producer.publish("payments", "refund", {"order_id": "o-2"}, message_id="refund-1")
    event = observe(rabbitmq_node, "warren.analytics", "payment.completed")  # every event reaches analytics
    assert (event.exchange, event.body) == ("warren.events", b'{"order_id":"o-1"}')
    assert observe(rabbitmq_node, "warren.shipping", "ship").exchange == "warren.tasks"
    dead = observe(rabbitmq_node, "warren.payments.dlq", "refund")
    assert (dead.message_id, dead.exchange) == ("refund-1", "warren.dlx")
    assert payments_worker.stats.retried == 1 and payments_worker.stats.dead_lettered == 1


@pytest.mark.docker
def test_the_api_publishes_tasks_and_asks_through_direct_reply_to(rabbitmq_node: Node, applied: Settings,
                                                                 payments_worker: Worker) -> None:
    """Its readiness check, an order, and a request answered by the payments worker, whose reply
    goes back through the default exchange to direct reply-to."""
    with Producer(as_user(applied, rabbitmq_node.url("api")), name="warren-api") as producer:
        producer.ping()  # the API's /readyz: a passive declare of warren.tasks, no permission needed
        producer.publish("orders", "place", {"order_id": "o-3"}, message_id="order-3")
        assert producer.request("payments", "quote", {}, timeout=15) == {"cents": 500, "worker": "payments-1"}
    assert observe(rabbitmq_node, "warren.orders", "place").message_id == "order-3"


@pytest.mark.docker
def test_each_user_is_refused_what_its_role_must_not_do(rabbitmq_node: Node, applied: Settings) -> None:
    api, worker, test = (rabbitmq_node.url(user) for user in ("api", "worker-payments", "helm-test"))
    # The internet-facing API takes no message, changes no topology, publishes only tasks.
    assert "access to queue 'warren.orders' in vhost '/' refused for user 'api'" in refused(
        api, consume("warren.orders"))
    refused(api, consume("warren.payments.dlq"))
    refused(api, publish("warren.events", "order.created"))
    refused(api, publish("", "warren.orders"))  # no way around warren.tasks through the default exchange
    refused(api, lambda ch: ch.queue_purge("warren.orders"))
    refused(api, lambda ch: ch.queue_delete("warren.orders"))
    refused(api, lambda ch: ch.queue_declare("api-owned", durable=True))
    refused(api, lambda ch: ch.exchange_declare("warren.tasks", exchange_type="direct", durable=True))
    # A worker: not another pool's queue, nor its own dead letters, and no change to the topology.
    assert "refused for user 'worker-payments'" in refused(worker, consume("warren.orders"))
    refused(worker, consume("warren.payments.dlq"))
    assert "access to queue 'warren.payments' in vhost '/' refused" in refused(
        worker, lambda ch: ch.queue_delete("warren.payments"))
    refused(worker, lambda ch: ch.queue_declare("warren.payments", durable=True, arguments={"x-queue-type": "quorum"}))
    refused(worker, lambda ch: ch.queue_bind("warren.payments", "warren.events", "#"))
    refused(worker, lambda ch: ch.exchange_delete("warren.events"))
    refused(worker, publish("warren.broadcast", ""))
    # The helm test pods: their own namespace, and a task to a deployed pool; nothing else.
    refused(test, consume("warren.inventory"))
    refused(test, lambda ch: ch.queue_delete("warren.inventory"))
    refused(test, lambda ch: ch.queue_declare("warren.intruder", durable=True))
    # The operator's user: the management API only.
    operator = f"amqp://operator:{password(rabbitmq_node, 'operator')}@{rabbitmq_node.host}:5672/%2F"
    refused(operator, publish("warren.tasks", "payments"))
    refused(operator, consume("warren.payments"))


@pytest.mark.docker
def test_the_helm_test_user_runs_a_selftest_round_trip_in_its_own_namespace(rabbitmq_node: Node, applied: Settings,
                                                                           tmp_path: Path) -> None:
    """helm test's first pod: a selftest worker that declares its own topology (warren-test.*) and
    a request to it, both as helm-test."""
    health = tmp_path / "selftest-health"
    settings = as_user(applied, rabbitmq_node.url("helm-test"), namespace="warren-test", declare_topology=True,
                       health_file=health, worker_name="selftest-1")
    worker = Worker(load_pool("warren.testing.selftest:pool"), settings)
    thread = threading.Thread(target=worker.run, name="selftest-worker", daemon=True)
    thread.start()
    try:
        eventually(lambda: health.exists() or not thread.is_alive(), timeout=30, what="the selftest worker consumes")
        assert thread.is_alive(), "the selftest worker stopped"
        with Producer(settings, name="warren-cli") as producer:
            assert producer.request("selftest", "work", {}, timeout=15)["worker"] == "selftest-1"
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.docker
def test_the_operator_reads_the_management_api_as_a_monitoring_user(rabbitmq_node: Node,
                                                                    payments_worker: Worker) -> None:
    """The operator's own two reads: the queue's depth and rates, and who consumes it (other users'
    channels and connections: what the monitoring tag is for). Nothing an administrator may."""
    config = ManagementConfig(base_url=f"http://{rabbitmq_node.host}:15672", username="operator",
                              password=SecretStr(password(rabbitmq_node, "operator")))
    deadline = time.monotonic() + 30
    while True:
        try:
            stats = fetch_queue_stats(config, "/", "warren.payments", current_replicas=1, timeout=5)
            consumers = fetch_consumers(config, "/", "warren.payments", timeout=5)
            if any(c.connection_name == "payments-1" for c in consumers):
                break
            problem = f"no consumer payments-1 among {consumers}"
        except MetricsError as e:  # a new queue's stats and channels come within 5 s
            problem = str(e)
        assert time.monotonic() < deadline, f"the operator's reads did not succeed: {problem}"
        time.sleep(0.5)
    assert stats.consumers >= 1
    status, _ = management._get(config, config.base_url + "/api/users", shown="/api/users", timeout=5)
    assert status == 401  # the users are the administrator's business


@pytest.mark.docker
def test_the_operations_api_user_lists_replays_and_purges_dead_letters(renders, rabbitmq_node: Node,
                                                                       applied: Settings,
                                                                       payments_worker: Worker) -> None:
    """The api user as the chart defines it with the operations API on (the monitoring value set's
    permissions, given here to a user of that name's own), through warren.dlq and the dashboard's
    queue numbers: it lists a dead letter, replays it (confirmed, then removed) and purges it, and
    reads the management API; it still cannot take a pool's work or touch the topology."""
    spec = users(renders["monitoring"])["api"]
    user, secret = "api-operations", "operations-" + password(rabbitmq_node, "api")
    rabbitmq_node.rabbitmqctl("add_user", user, secret)
    rabbitmq_node.rabbitmqctl("set_permissions", "-p", "/", user, spec["configure"], spec["write"], spec["read"])
    rabbitmq_node.rabbitmqctl("set_user_tags", user, *spec["tags"])
    url = f"amqp://{user}:{secret}@{rabbitmq_node.host}:5672/%2F"
    settings = as_user(applied, url)
    with Producer(settings, name="warren-api") as producer:
        producer.publish("payments", "refund", {"order_id": "o-9"}, message_id="refund-ops")
    dead = DeadLetters(settings, ["payments"], name="warren-api-dlq")
    only = Selection(ids=frozenset({"refund-ops"}))

    def dead_lettered(replays: int) -> bool:
        entries = dead.listing(only).entries
        return len(entries) == 1 and len(entries[0].replays) == replays

    eventually(lambda: dead_lettered(0), timeout=30, what="the refund dead-lettered")
    assert dead.replay(only).count == 1  # back to warren.payments: refused again, dead-lettered again
    eventually(lambda: dead_lettered(1), timeout=30, what="the replayed refund dead-lettered again")
    assert dead.purge(only).count == 1 and dead.listing(only).entries == ()
    (row,) = pool_queues(settings, ["payments"], management_url=f"http://{rabbitmq_node.host}:15672")
    assert (row.source, row.consumers) == ("management API", 1)
    refused(url, consume("warren.payments"))
    refused(url, lambda ch: ch.basic_get("warren.payments"))
    refused(url, publish("warren.events", "order.created"))
    refused(url, lambda ch: ch.queue_purge("warren.payments"))
    refused(url, lambda ch: ch.queue_declare("api-owned", durable=True))
