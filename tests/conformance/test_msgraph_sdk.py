"""The Graph emulator held against the real Python Graph SDK (msgraph-sdk 1.65.0).

Each test starts the emulator binary on a temporary tenant file, talks to it only through
msgraph-sdk (GraphRequestAdapter + BaseBearerTokenAuthenticationProvider with a token from the
emulator's own token endpoint) and reads the emulator's control endpoint to check what it saw.
The binary comes from $GRAPH_EMULATOR_BIN (run.sh sets it) or <repo>/target/debug/graph-emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import httpx
import pytest
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.groups.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.models.group import Group
from msgraph.generated.models.on_premises_extension_attributes import OnPremisesExtensionAttributes
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory

REPO = Path(__file__).resolve().parents[2]

TENANT_ID = "5e1f0c2a-6b3d-4a8e-9c71-0d2b4f6a8c10"
CLIENT_ID = "0b7d9e21-4c6a-4f3b-8e15-a2c4d6e8f001"
CLIENT_SECRET = "conformance-secret"

U1 = "693acd06-2877-4339-8ade-b704261fe7a0"
U2 = "49320844-be99-4164-8167-87ff5d047ace"
U3 = "632f6bb2-3ec8-4c1f-9073-0027a8c68593"
U4 = "3c8ac7c4-d365-4df9-abfa-356a9dd7763c"
U5 = "37de1ae3-408f-4702-8636-20824abda004"

G_M365 = "c2f798fd-f95d-4623-8824-63aec21f0001"  # "All Company", Unified
G_HR = "ec22655c-8eb2-432a-b4ea-8b8a254b0002"  # security, members U1 U2
G_EMPTY = "bed7f0d4-750e-4e7e-a1b2-169002d06fc9"  # security, no members
G_MARK8 = "2e5807ce-58f3-4a94-9b37-0cde2e085957"  # security, member U3
G_SALES = "421e797f-9406-4934-b778-4908421e3505"  # Unified, members U4 U2


def _user(uid: str, n: int) -> dict[str, Any]:
    return {
        "id": uid,
        "displayName": f"Testuser{n}",
        "givenName": f"Given{n}",
        "surname": "Doe",
        "userPrincipalName": f"testuser{n}@contoso.onmicrosoft.com",
        "mailNickname": f"testuser{n}",
        "accountEnabled": True,
    }


def _security(gid: str, name: str, members: list[str]) -> dict[str, Any]:
    return {
        "id": gid,
        "displayName": name,
        "description": name,
        "groupTypes": [],
        "mailEnabled": False,
        "securityEnabled": True,
        "mailNickname": name.replace(" ", "").lower(),
        "members": members,
    }


def _m365(gid: str, name: str, members: list[str]) -> dict[str, Any]:
    nick = name.replace(" ", "").lower()
    return {
        "id": gid,
        "displayName": name,
        "description": name,
        "groupTypes": ["Unified"],
        "mailEnabled": True,
        "securityEnabled": False,
        "mailNickname": nick,
        "mail": f"{nick}@contoso.onmicrosoft.com",
        "visibility": "Public",
        "members": members,
    }


def tenant() -> dict[str, Any]:
    """Mirrors the doc scenario of delta-query-groups (All Company, sg-HR, Mark 8, Sales...)."""
    return {
        "tenantId": TENANT_ID,
        "domain": "contoso.onmicrosoft.com",
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}],
        "users": [_user(u, i + 1) for i, u in enumerate([U1, U2, U3, U4, U5])],
        "groups": [
            _m365(G_M365, "All Company", [U1, U2]),
            _security(G_HR, "sg-HR", [U1, U2]),
            _security(G_EMPTY, "All Employees", []),
            _security(G_MARK8, "Mark 8 Project Team", [U3]),
            _m365(G_SALES, "Sales and Marketing", [U4, U2]),
        ],
    }


def emulator_binary() -> str:
    path = os.environ.get("GRAPH_EMULATOR_BIN") or str(REPO / "target" / "debug" / "graph-emulator")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"graph-emulator binary not found at {path}: set GRAPH_EMULATOR_BIN or run "
            "`cargo build -p graph-emulator`"
        )
    return path


class Emulator:
    """One running emulator process."""

    def __init__(self, proc: subprocess.Popen, base: str, stderr_path: Path) -> None:
        self.proc = proc
        self.base = base
        self.stderr_path = stderr_path
        # Loopback only; ignore proxy/CA settings from the environment.
        self._http = httpx.Client(trust_env=False, timeout=30)

    def control(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        r = self._http.request(method, f"{self.base}/_emulator/{path}", json=body)
        assert r.status_code == 200, f"control {method} {path}: {r.status_code} {r.text}"
        return r.json()

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "state")["_emulator"]

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def start_emulator(tmp_path: Path):
    """Factory: start the emulator on a tenant (default: tenant()) with extra serve flags."""
    started: list[Emulator] = []

    def start(*flags: str, tenant_doc: Optional[dict] = None) -> Emulator:
        tenant_file = tmp_path / f"tenant-{len(started)}.json"
        tenant_file.write_text(json.dumps(tenant_doc or tenant()), encoding="utf-8")
        stderr_path = tmp_path / f"emulator-{len(started)}.log"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [emulator_binary(), "serve", "--listen", "127.0.0.1:0", "--tenant", str(tenant_file), *flags],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            pytest.fail(f"emulator did not print its base URL (got {line!r}): {stderr_path.read_text()}")
        emu = Emulator(proc, line, stderr_path)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


class EmulatorTokenProvider(AccessTokenProvider):
    """Client-credentials token from the emulator's token endpoint, fetched once."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._token: Optional[str] = None
        self._hosts = AllowedHostsValidator(["127.0.0.1"])
        self.fetched = 0

    async def get_authorization_token(self, uri: str, additional_authentication_context=None) -> str:
        if not self._hosts.is_url_host_valid(uri):
            return ""
        if self._token is None:
            async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
                r = await http.post(
                    f"{self._base}/{TENANT_ID}/oauth2/v2.0/token",
                    data={
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "grant_type": "client_credentials",
                        "scope": "https://graph.microsoft.com/.default",
                    },
                )
            assert r.status_code == 200, f"token endpoint: {r.status_code} {r.text}"
            body = r.json()
            assert body["token_type"] == "Bearer"
            self._token = body["access_token"]
            self.fetched += 1
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


def run_with_client(emu: Emulator, body):
    """Run `body(client)` in a fresh event loop with a client bound to that loop."""

    async def main():
        http = httpx.AsyncClient(trust_env=False, timeout=60)
        http = GraphClientFactory.create_with_default_middleware(client=http)
        auth = BaseBearerTokenAuthenticationProvider(EmulatorTokenProvider(emu.base))
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = f"{emu.base}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        try:
            return await body(client)
        finally:
            await http.aclose()

    return asyncio.run(main())


def select_config(*props: str) -> RequestConfiguration:
    return RequestConfiguration(
        query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=list(props))
    )


async def groups_delta_round(client: GraphServiceClient, start_url: Optional[str] = None, *props: str):
    """One full round: the initial request (or a deltaLink), then nextLinks until a deltaLink.
    Returns (pages, deltaLink)."""
    if start_url is None:
        page = await client.groups.delta.get(request_configuration=select_config(*props))
    else:
        page = await client.groups.delta.with_url(start_url).get()
    pages = [page]
    while True:
        assert page is not None
        has_next, has_delta = bool(page.odata_next_link), bool(page.odata_delta_link)
        assert has_next != has_delta, "a delta page carries exactly one of nextLink/deltaLink"
        if has_delta:
            return pages, page.odata_delta_link
        assert len(pages) < 100, "delta round does not end"
        page = await client.groups.delta.with_url(page.odata_next_link).get()
        pages.append(page)


def member_entries(group: Group) -> list[dict[str, Any]]:
    raw = (group.additional_data or {}).get("members@delta") or []
    out = []
    for m in raw:
        assert isinstance(m, dict), f"members@delta entry is {type(m)}: {m!r}"
        out.append(m)
    return out


def merge_round(pages) -> dict[str, dict[str, Any]]:
    """Per-id merge of a round: last seen properties, added and removed member ids."""
    merged: dict[str, dict[str, Any]] = {}
    for page in pages:
        for g in page.value or []:
            assert g.id, "every delta item carries an id"
            entry = merged.setdefault(g.id, {"added": set(), "removed": set(), "removed_reason": None})
            if g.display_name is not None:
                entry["displayName"] = g.display_name
            removed = (g.additional_data or {}).get("@removed")
            if removed is not None:
                entry["removed_reason"] = removed.get("reason")
            for m in member_entries(g):
                assert m.get("@odata.type") in ("#microsoft.graph.user", "#microsoft.graph.group")
                # Kiota turns GUID-shaped strings of untyped data into uuid.UUID.
                mid = str(m["id"])
                if "@removed" in m:
                    assert m["@removed"] == {"reason": "deleted"}, m
                    entry["removed"].add(mid)
                else:
                    entry["added"].add(mid)
    return merged


def assert_links_rooted(emu: Emulator, link: str, kind: str = "groups") -> None:
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == emu.base, link
    assert parts.path == f"/v1.0/{kind}/delta", link


def expected_members() -> dict[str, set[str]]:
    return {g["id"]: set(g["members"]) for g in tenant()["groups"]}


def test_full_groups_delta_round_with_select(start_emulator):
    emu = start_emulator("--delta-page-size", "2")

    async def body(client):
        return await groups_delta_round(client, None, "displayName", "members")

    pages, delta_link = run_with_client(emu, body)
    assert len(pages) == 3, "5 groups at 2 per page"
    for p in pages[:-1]:
        assert_links_rooted(emu, p.odata_next_link)
    assert_links_rooted(emu, delta_link)
    assert "$deltatoken=" in delta_link
    merged = merge_round(pages)
    want = expected_members()
    assert set(merged) == set(want)
    for gid, members in want.items():
        assert merged[gid]["added"] == members, gid
        assert merged[gid]["removed"] == set()
        assert merged[gid]["removed_reason"] is None
    names = {g["id"]: g["displayName"] for g in tenant()["groups"]}
    assert {gid: e["displayName"] for gid, e in merged.items()} == names
    # Only the selected properties (and id) come back.
    for p in pages:
        for g in p.value:
            assert g.description is None and g.mail is None and g.group_types is None


def test_changes_through_the_api_show_in_next_round(start_emulator):
    emu = start_emulator("--delta-page-size", "2")

    async def body(client):
        _, link = await groups_delta_round(client, None, "displayName", "members")

        created = await client.groups.post(
            Group(
                display_name="Writeback Created",
                description="made by the conformance test",
                group_types=[],
                mail_enabled=False,
                mail_nickname="wbcreated",
                security_enabled=True,
            )
        )
        assert created is not None and created.id
        await client.groups.by_group_id(created.id).members.ref.post(
            ReferenceCreate(odata_id=f"{emu.base}/v1.0/directoryObjects/{U5}")
        )
        await client.groups.by_group_id(G_HR).members.ref.post(
            ReferenceCreate(odata_id=f"{emu.base}/v1.0/directoryObjects/{U3}")
        )
        await client.groups.by_group_id(G_HR).members.by_directory_object_id(U1).ref.delete()
        await client.groups.by_group_id(G_M365).delete()
        await client.groups.by_group_id(G_EMPTY).delete()

        pages, link2 = await groups_delta_round(client, link)
        quiet_pages, link3 = await groups_delta_round(client, link2)
        return created.id, pages, link2, quiet_pages, link3

    new_id, pages, link2, quiet_pages, link3 = run_with_client(emu, body)
    assert_links_rooted(emu, link2)
    merged = merge_round(pages)

    assert set(merged) == {new_id, G_HR, G_M365, G_EMPTY}, "only changed groups surface"
    assert merged[new_id]["displayName"] == "Writeback Created"
    assert merged[new_id]["added"] == {U5}
    assert merged[new_id]["removed_reason"] is None

    assert merged[G_HR]["added"] == {U3}
    assert merged[G_HR]["removed"] == {U1}, "member removal = members@delta entry with @removed"
    assert merged[G_HR]["removed_reason"] is None

    assert merged[G_M365]["removed_reason"] == "changed", "Microsoft 365 group delete is soft"
    assert merged[G_EMPTY]["removed_reason"] == "deleted", "security group delete is permanent"

    # A removed object is just {id, @removed}.
    for p in pages:
        for g in p.value:
            if g.id in (G_M365, G_EMPTY):
                assert g.display_name is None and not member_entries(g)

    # No changes since: value [] with a deltaLink.
    assert len(quiet_pages) == 1 and quiet_pages[0].value == []
    assert_links_rooted(emu, link3)


def test_owners_are_added_listed_and_removed_through_the_sdk(start_emulator):
    emu = start_emulator()

    async def body(client):
        _, link = await groups_delta_round(client, None, "displayName", "members")
        owners = client.groups.by_group_id(G_HR).owners
        for uid in (U1, U3):
            await owners.ref.post(ReferenceCreate(odata_id=f"{emu.base}/v1.0/directoryObjects/{uid}"))
        listed = await owners.get()
        await owners.by_directory_object_id(U1).ref.delete()
        after = await owners.get()
        pages, _ = await groups_delta_round(client, link)
        return listed, after, pages

    listed, after, pages = run_with_client(emu, body)
    # The SDK types each owner from its @odata.type.
    assert sorted((type(o).__name__, o.id) for o in listed.value) == sorted(
        [("User", U1), ("User", U3)]
    )
    assert [o.id for o in after.value] == [U3]
    # Owners are not what a delta selecting members tracks.
    assert all(p.value == [] for p in pages), [g.id for p in pages for g in p.value]


def test_round_pages_through_an_empty_page(start_emulator):
    emu = start_emulator("--delta-page-size", "2", "--empty-delta-page")

    async def body(client):
        return await groups_delta_round(client, None, "displayName", "members")

    pages, _ = run_with_client(emu, body)
    empties = [p for p in pages if not p.value]
    assert empties, "the emulator was asked for an empty delta page"
    assert all(p.odata_next_link and not p.odata_delta_link for p in empties)
    merged = merge_round(pages)
    assert {gid: e["added"] for gid, e in merged.items()} == expected_members()


def test_empty_page_switched_on_by_control_endpoint(start_emulator):
    emu = start_emulator("--delta-page-size", "10")
    emu.control("PUT", "settings", {"emptyDeltaPage": True})

    async def body(client):
        return await groups_delta_round(client, None, "displayName", "members")

    pages, _ = run_with_client(emu, body)
    assert len(pages) >= 2 and any(not p.value and p.odata_next_link for p in pages)
    assert {gid: e["added"] for gid, e in merge_round(pages).items()} == expected_members()


def test_throttling_is_retried_by_the_sdk(start_emulator):
    # Deterministic: the same seed throttles the same request numbers on every run. Seed 12 at
    # rate 0.4 throttles several single requests and never 4 in a row (Kiota retries 3 times).
    emu = start_emulator("--fault-429-rate", "0.4", "--seed", "12", "--retry-after", "1", "--delta-page-size", "2")

    async def body(client):
        users = await client.users.get()
        groups = await client.groups.get()
        hr = await client.groups.by_group_id(G_HR).get()
        pages, _ = await groups_delta_round(client, None, "displayName", "members")
        return users, groups, hr, pages

    started = time.monotonic()
    users, groups, hr, pages = run_with_client(emu, body)
    elapsed = time.monotonic() - started
    assert len(users.value) == 5
    assert len(groups.value) == 5
    assert hr.display_name == "sg-HR"
    assert {gid: e["added"] for gid, e in merge_round(pages).items()} == expected_members()

    stats = emu.stats()
    logical = 3 + len(pages)
    assert stats["faultsInjected"] >= 1, f"no 429 was injected: {stats}"
    assert stats["requests"] == logical + stats["faultsInjected"], (
        f"every throttled request was retried exactly until it succeeded: {stats}, {logical} calls"
    )
    # Retry-After: 1 was honoured (one second per retry).
    assert elapsed >= stats["faultsInjected"] * 0.9, (elapsed, stats)


def test_bad_requests_raise_odata_error(start_emulator):
    emu = start_emulator()

    async def body(client):
        errors = {}
        try:
            await client.groups.delta.with_url(f"{emu.base}/v1.0/groups/delta?$deltatoken=not-a-token").get()
        except ODataError as e:
            errors["malformed"] = e
        try:
            await client.groups.delta.with_url(f"{emu.base}/v1.0/groups/delta?deltatoken=latest").get()
        except ODataError as e:
            errors["no_dollar"] = e
        try:
            await client.users.get(
                request_configuration=RequestConfiguration(
                    query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(top=1000)
                )
            )
        except ODataError as e:
            errors["top"] = e
        try:
            await client.groups.by_group_id("00000000-0000-0000-0000-00000000dead").get()
        except ODataError as e:
            errors["missing"] = e
        return errors

    errors = run_with_client(emu, body)
    assert set(errors) == {"malformed", "no_dollar", "top", "missing"}, errors

    # Field notes in the Graph reference: a garbage $deltatoken is 400 "Badly formed token.".
    e = errors["malformed"]
    assert e.response_status_code == 400
    assert e.error.code == "Request_BadRequest"
    assert e.error.message == "Badly formed token."
    # errors/observed_deltatoken-without-dollar-400.json.
    e = errors["no_dollar"]
    assert e.response_status_code == 400
    assert e.error.code == "Request_BadRequest"
    assert e.error.message == "Unrecognized query argument specified: 'deltatoken'."
    # $top above 999 (the documented maximum): a directory 400; the exact code is not documented.
    e = errors["top"]
    assert e.response_status_code == 400
    assert e.error.code in ("Request_UnsupportedQuery", "Request_BadRequest"), e.error.code
    e = errors["missing"]
    assert e.response_status_code == 404
    assert e.error.code == "Request_ResourceNotFound"
    for e in errors.values():
        inner = e.error.inner_error
        assert inner is not None and inner.request_id and inner.date is not None


# Directory extension properties: extension_<appId without dashes>_<name>.
EXT_COST = "extension_0123456789abcdef0123456789abcdef_costCenter"
EXT_SITE = "extension_0123456789abcdef0123456789abcdef_site"


def tenant_with_extensions() -> dict[str, Any]:
    t = tenant()
    hr = next(g for g in t["groups"] if g["id"] == G_HR)
    hr[EXT_COST] = "CC-100"
    hr["classification"] = "MBI"
    t["users"][0]["onPremisesExtensionAttributes"] = {"extensionAttribute1": "badge-1"}
    return t


def group_select(*props: str) -> RequestConfiguration:
    return RequestConfiguration(
        query_parameters=GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(select=list(props))
    )


def user_select(*props: str) -> RequestConfiguration:
    return RequestConfiguration(
        query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=list(props))
    )


def test_directory_extension_properties_come_in_additional_data_when_selected(start_emulator):
    emu = start_emulator(tenant_doc=tenant_with_extensions())

    async def body(client):
        plain = await client.groups.by_group_id(G_HR).get()
        chosen = await client.groups.by_group_id(G_HR).get(
            request_configuration=group_select("displayName", "classification", EXT_COST, EXT_SITE)
        )
        await client.groups.by_group_id(G_HR).patch(Group(additional_data={EXT_COST: "CC-200"}))
        after = await client.groups.by_group_id(G_HR).get(request_configuration=group_select(EXT_COST))
        return plain, chosen, after

    plain, chosen, after = run_with_client(emu, body)
    assert EXT_COST not in (plain.additional_data or {}), "not selected, not returned"
    assert plain.classification == "MBI", "classification is a default group property"
    assert chosen.display_name == "sg-HR"
    assert chosen.classification == "MBI"
    assert chosen.additional_data[EXT_COST] == "CC-100"
    assert EXT_SITE not in chosen.additional_data, "an extension without a value is left out"
    assert after.additional_data[EXT_COST] == "CC-200"


def test_on_premises_extension_attributes_through_the_sdk_model(start_emulator):
    emu = start_emulator(tenant_doc=tenant_with_extensions())

    async def body(client):
        first = await client.users.by_user_id(U1).get(request_configuration=user_select("onPremisesExtensionAttributes"))
        await client.users.by_user_id(U1).patch(
            User(on_premises_extension_attributes=OnPremisesExtensionAttributes(extension_attribute2="floor-3"))
        )
        second = await client.users.by_user_id(U1).get(request_configuration=user_select("onPremisesExtensionAttributes"))
        plain = await client.users.by_user_id(U1).get()
        return first, second, plain

    first, second, plain = run_with_client(emu, body)
    attrs = first.on_premises_extension_attributes
    assert attrs is not None
    assert attrs.extension_attribute1 == "badge-1"
    assert attrs.extension_attribute15 is None
    assert not (attrs.additional_data or {}), "exactly the 15 documented keys"
    # PATCH sets the keys sent and keeps the others.
    attrs = second.on_premises_extension_attributes
    assert (attrs.extension_attribute1, attrs.extension_attribute2) == ("badge-1", "floor-3")
    assert plain.on_premises_extension_attributes is None, "returned only with $select"


def test_groups_delta_carries_a_selected_extension_and_its_change(start_emulator):
    emu = start_emulator("--delta-page-size", "2", tenant_doc=tenant_with_extensions())

    async def body(client):
        pages, link = await groups_delta_round(client, None, "displayName", "members", EXT_COST)
        await client.groups.by_group_id(G_MARK8).patch(Group(additional_data={EXT_COST: "CC-300"}))
        # Not selected: does not surface the group.
        await client.groups.by_group_id(G_EMPTY).patch(Group(additional_data={EXT_SITE: "Oslo"}))
        later, _ = await groups_delta_round(client, link)
        return pages, later

    pages, later = run_with_client(emu, body)
    values = {g.id: (g.additional_data or {}).get(EXT_COST) for p in pages for g in p.value}
    assert values[G_HR] == "CC-100"
    assert values[G_MARK8] is None
    changed = [g for p in later for g in p.value]
    assert [g.id for g in changed] == [G_MARK8]
    assert changed[0].additional_data[EXT_COST] == "CC-300"


D_HYBRID = "7e3b1c2d-0a4f-4b5e-9c6d-1e2f3a4b5c61"
D_CLOUD = "7e3b1c2d-0a4f-4b5e-9c6d-1e2f3a4b5c62"
G_DEVICES = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c63"  # security, members U1 + both devices


def tenant_with_devices() -> dict[str, Any]:
    t = tenant()
    t["devices"] = [
        {
            "id": D_HYBRID,
            "deviceId": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            "displayName": "PC-HYBRID",
            "accountEnabled": True,
            "operatingSystem": "Windows",
            "trustType": "ServerAd",
            "onPremisesSyncEnabled": True,
            "onPremisesSecurityIdentifier": "S-1-5-21-1004336348-1177238915-682003330-1601",
        },
        {
            "id": D_CLOUD,
            "deviceId": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f1",
            "displayName": "PHONE-CLOUD",
            "accountEnabled": True,
            "operatingSystem": "iOS",
            "trustType": "Workplace",
        },
    ]
    t["groups"].append(_security(G_DEVICES, "Device Targets", [U1, D_HYBRID, D_CLOUD]))
    return t


def test_devices_delta_and_device_members_through_the_sdk_models(start_emulator):
    from msgraph.generated.devices.delta.delta_request_builder import (
        DeltaRequestBuilder as DevicesDeltaRequestBuilder,
    )
    from msgraph.generated.models.device import Device

    emu = start_emulator("--delta-page-size", "1", tenant_doc=tenant_with_devices())

    async def body(client):
        config = RequestConfiguration(
            query_parameters=DevicesDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                select=["displayName", "trustType", "onPremisesSecurityIdentifier"]
            )
        )
        page = await client.devices.delta.get(request_configuration=config)
        pages = [page]
        while page.odata_next_link:
            assert len(pages) < 10, "the devices' delta round does not end"
            page = await client.devices.delta.with_url(page.odata_next_link).get()
            pages.append(page)
        members = await client.groups.by_group_id(G_DEVICES).members.get()
        return pages, members

    pages, members = run_with_client(emu, body)
    assert len(pages) == 2, "two devices at one per page"
    assert_links_rooted(emu, pages[0].odata_next_link, kind="devices")
    assert_links_rooted(emu, pages[-1].odata_delta_link, kind="devices")
    devices = {d.id: d for p in pages for d in p.value}
    assert set(devices) == {D_HYBRID, D_CLOUD}
    for d in devices.values():
        assert isinstance(d, Device), type(d)
    hybrid, cloud = devices[D_HYBRID], devices[D_CLOUD]
    assert (hybrid.display_name, hybrid.trust_type) == ("PC-HYBRID", "ServerAd")
    assert hybrid.on_premises_security_identifier.startswith("S-1-5-21-")
    assert cloud.trust_type == "Workplace" and cloud.on_premises_security_identifier is None
    # Only the selected properties (and id) come back.
    assert hybrid.operating_system is None and hybrid.device_id is None
    # A group's members are typed by the SDK from @odata.type: the user and both devices.
    kinds = {m.id: type(m).__name__ for m in members.value}
    assert kinds == {U1: "User", D_HYBRID: "Device", D_CLOUD: "Device"}, kinds
