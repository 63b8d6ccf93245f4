"""Who is calling (bearer token or client certificate) and what RBAC lets them do.

The rules are RBAC's allow-only model: a user is allowed a request when any of their
rules, any rule bound to one of their groups (or the ``system:masters`` group) covers it.
Denials produce the exact message a real API server writes, e.g. ``pods "x" is
forbidden: User "y" cannot create resource "pods/exec" in API group "" in the namespace
"z"``. Impersonation (``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*``) is checked
as the API server's impersonation filter does: the ``impersonate`` verb on users (or
serviceaccounts), groups, uids and userextras, each by name, before the request itself
is authorised as the impersonated user.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
_SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule. ``namespaces=None`` means granted cluster-wide
    (a ClusterRoleBinding); a tuple means RoleBindings in those namespaces."""

    verbs: tuple[str, ...]
    resources: tuple[str, ...]  # "pods", "pods/exec", "*", "*/exec"
    api_groups: tuple[str, ...] = ("*",)  # "" is the core group
    namespaces: tuple[str, ...] | None = None
    resource_names: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        def tup(key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
            value = data.get(key)
            if value is None:
                return default
            if isinstance(value, str):
                return (value,)
            return tuple(str(v) for v in value)

        verbs = tup("verbs", None)
        resources = tup("resources", None)
        if not verbs or not resources:
            raise ValueError("an RBAC rule needs non-empty 'verbs' and 'resources'")
        return cls(
            verbs=verbs,
            resources=resources,
            api_groups=tup("api_groups", ("*",)) or ("*",),
            namespaces=tup("namespaces", None),
            resource_names=tup("resource_names", ()) or (),
        )

    def allows(self, attrs: Attributes) -> bool:
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if "*" not in self.api_groups and attrs.api_group not in self.api_groups:
            return False
        if self.namespaces is not None and (
            not attrs.namespace or attrs.namespace not in self.namespaces
        ):
            return False
        if self.resource_names and attrs.name not in self.resource_names:
            return False
        want = attrs.full_resource
        for res in self.resources:
            if res == "*" or res == want:
                return True
            if attrs.subresource and res == f"*/{attrs.subresource}":
                return True
        return False


ADMIN_RULES: tuple[Rule, ...] = (Rule(verbs=("*",), resources=("*",)),)


@dataclass(frozen=True)
class Attributes:
    """What a request does, in authorizer terms."""

    verb: str
    resource: str
    subresource: str = ""
    api_group: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def forbidden_message(self, user: str) -> str:
        where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        reason = (
            f'User "{user}" cannot {self.verb} resource "{self.full_resource}" in API group '
            f'"{self.api_group}" {where}'
        )
        qualified = f"{self.resource}.{self.api_group}" if self.api_group else self.resource
        if self.name:
            return f'{qualified} "{self.name}" is forbidden: {reason}'
        return f"{qualified} is forbidden: {reason}"


@dataclass
class User:
    """A principal the sim knows. Tests may replace ``rules`` at runtime."""

    name: str
    groups: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Impersonation:
    """What a request's ``Impersonate-*`` headers ask for (empty: nothing)."""

    user: str | None = None
    groups: tuple[str, ...] = ()
    uid: str | None = None
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def requested(self) -> bool:
        return (
            self.user is not None or bool(self.groups) or self.uid is not None or bool(self.extra)
        )


class ImpersonationDenied(Exception):
    """The requester may not impersonate: ``attrs`` is what was refused (403)."""

    def __init__(self, attrs: Attributes, message: str) -> None:
        super().__init__(message)
        self.attrs = attrs


class ImpersonationInvalid(Exception):
    """Impersonation headers that make no request (groups without a user): 500 as the
    API server answers."""


class Authorizer:
    """Maps credentials to identities and decides requests."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.cert_users: dict[str, User] = {}  # by certificate CN
        self.group_rules: dict[str, list[Rule]] = {}  # RoleBindings to a Group subject

    def add_group(self, group: str, rules: list[Rule]) -> None:
        """Bind *rules* to every member of *group* (replacing earlier ones)."""
        self.group_rules[group] = list(rules)

    def add(self, user: User) -> User:
        self.users[user.name] = user
        return user

    def by_token(self, token: str) -> Identity | None:
        for user in self.users.values():
            if secrets.compare_digest(user.token, token):
                return Identity(user.name, (*user.groups, "system:authenticated"))
        return None

    def by_certificate(self, cn: str, orgs: tuple[str, ...]) -> Identity:
        # A certificate signed by the cluster CA is trusted as-is (as the API server does).
        return Identity(cn, (*orgs, "system:authenticated"))

    def decide(self, who: Identity, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) for *attrs* requested by *who*."""
        if MASTERS in who.groups:
            return True, (
                'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole '
                f'"cluster-admin" to Group "{MASTERS}"'
            )
        if attrs.resource == "selfsubjectaccessreviews" or (
            attrs.resource == "selfsubjectrulesreviews"
        ):
            return True, 'RBAC: allowed by ClusterRoleBinding "system:basic-user"'
        user = self.users.get(who.name)
        if user is not None:
            for rule in user.rules:
                if rule.allows(attrs):
                    return True, f'RBAC: allowed by RoleBinding "sim-{user.name}"'
        for group in who.groups:
            for rule in self.group_rules.get(group, ()):
                if rule.allows(attrs):
                    return True, f'RBAC: allowed by RoleBinding "sim-group-{group}"'
        return False, ""

    def impersonate(self, who: Identity, wanted: Impersonation) -> Identity:
        """The identity *who* acts as with *wanted*'s headers, each one authorised as the
        API server's impersonation filter does. Raises ImpersonationDenied (403) or
        ImpersonationInvalid (500)."""
        if not wanted.requested:
            return who
        if wanted.user is None:
            raise ImpersonationInvalid(
                f"requested {_describe(wanted)} without impersonating a user"
            )
        checks: list[Attributes] = []
        username = wanted.user
        if username.startswith(_SA_PREFIX) and username.count(":") == 3:
            namespace, name = username[len(_SA_PREFIX) :].split(":")
            checks.append(Attributes("impersonate", "serviceaccounts", namespace=namespace,
                                     name=name))  # fmt: skip
        else:
            checks.append(Attributes("impersonate", "users", name=username))
        checks += [Attributes("impersonate", "groups", name=g) for g in wanted.groups]
        if wanted.uid is not None:
            checks.append(Attributes("impersonate", "uids", api_group="authentication.k8s.io",
                                     name=wanted.uid))  # fmt: skip
        for key, values in wanted.extra:
            checks += [
                Attributes("impersonate", "userextras", key, "authentication.k8s.io", name=v)
                for v in values
            ]
        for attrs in checks:
            allowed, _ = self.decide(who, attrs)
            if not allowed:
                raise ImpersonationDenied(attrs, attrs.forbidden_message(who.name))
        groups = list(wanted.groups)
        if not groups and username.startswith(_SA_PREFIX) and username.count(":") == 3:
            namespace = username.split(":")[2]
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        if username != ANONYMOUS and not {AUTHENTICATED, UNAUTHENTICATED} & set(groups):
            groups.append(AUTHENTICATED)
        return Identity(username, tuple(groups), wanted.uid or "", wanted.extra)

    def rules_for(self, who: Identity, namespace: str) -> list[Rule]:
        if MASTERS in who.groups:
            return list(ADMIN_RULES)
        user = self.users.get(who.name)
        rules = list(user.rules) if user is not None else []
        for group in who.groups:
            rules += self.group_rules.get(group, ())
        return [r for r in rules if r.namespaces is None or namespace in r.namespaces]


def _describe(wanted: Impersonation) -> str:
    """The requests as the API server lists them in its error: Go's %v of a slice of
    ObjectReference (Kind, Namespace, Name, UID, APIVersion, ResourceVersion, FieldPath)."""
    refs = [("Group", g) for g in wanted.groups]
    refs += [("UID", wanted.uid)] if wanted.uid is not None else []
    refs += [("UserExtra", k) for k, _ in wanted.extra]
    return "[" + " ".join(f"{{{kind}  {name}     }}" for kind, name in refs) + "]"
