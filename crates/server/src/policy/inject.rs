//! The `inject` action: may the credential itself be released into a command's environment on a
//! member's device (`POST /v1/agents/{id}/inject`, `latchkey run --inject`)?
//!
//! One Cedar evaluation against the workspace's compiled policy set and the same entity store as
//! calls, with no approval step: an injected credential is not used call by call, so there is
//! nothing a member could approve once. On top of Cedar's decision, an allow counts only if one of
//! the permits that allowed names `Latchkey::Action::"inject"` in its action scope
//! (`action == Latchkey::Action::"inject"` or `action in [..., Latchkey::Action::"inject"]`). A
//! permit for any action (`permit (principal, action, resource)`) was written for calls, or
//! before inject existed; it must not hand out credentials, so it does not allow an inject.

use std::str::FromStr as _;

use cedar_policy::{
    ActionConstraint, Context, Decision, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use latchkey_core::ids::{AgentId, CredentialId, MemberId, Owner, WorkspaceId};

use super::{GrantKind, PolicyDecision, PolicyEngine, PolicyRequest, hour_and_weekday};
use crate::store::{Store, StoreError};

/// The id of the action, `Latchkey::Action::"inject"`.
pub const INJECT_ACTION: &str = "inject";
/// Longest lifetime an inject may ask for, in seconds: 24 hours.
pub const MAX_INJECT_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// `context.method`, `context.host`, `context.path` and `context.grant` of every inject: an
/// injected credential works for any method, host and path, with no capability.
const ANY_METHOD: &str = "*";
const ANY_HOST: &str = "*";
const ANY_PATH: &str = "/**";

/// One request to release a credential into a command's environment, as the policies see it.
#[derive(Debug, Clone)]
pub struct InjectRequest<'a> {
    /// The workspace whose policies decide.
    pub workspace: WorkspaceId,
    /// The agent the command runs as.
    pub agent: AgentId,
    /// Its display name.
    pub agent_name: &'a str,
    /// Its owner.
    pub agent_owner: MemberId,
    /// The credential to release.
    pub credential: CredentialId,
    /// Its name.
    pub credential_name: &'a str,
    /// Its provider catalog id.
    pub provider: &'a str,
    /// Shared, or the member a personal credential belongs to.
    pub credential_owner: Owner,
    /// How long the command may keep it, in seconds (`context.lifetime`).
    pub lifetime_secs: u64,
    /// The command's program name (`context.command`).
    pub command: &'a str,
    /// Broker time, unix seconds: loading and caching, and by default `context.hour` and
    /// `context.weekday`.
    pub now: u64,
}

impl<'a> InjectRequest<'a> {
    /// The agent and credential as a call's request, for the shared entity store (which reads
    /// only the agent's and the credential's attributes).
    fn subject(&self) -> PolicyRequest<'a> {
        PolicyRequest {
            workspace: self.workspace,
            agent: self.agent,
            agent_name: self.agent_name,
            agent_owner: self.agent_owner,
            credential: self.credential,
            credential_name: self.credential_name,
            provider: self.provider,
            credential_owner: self.credential_owner,
            method: ANY_METHOD,
            host: ANY_HOST,
            path: ANY_PATH,
            now: self.now,
            grant: GrantKind::None,
        }
    }
}

impl PolicyEngine {
    /// Decides an inject with the workspace's own policies (loaded and cached as for calls).
    /// `approval_required` is always false. `Err` only for store failures or a broken stored
    /// policy set (then deny).
    pub async fn evaluate_inject(
        &self,
        store: &Store,
        request: &InjectRequest<'_>,
    ) -> Result<PolicyDecision, StoreError> {
        self.evaluate_inject_at(store, request, request.now).await
    }

    /// [`Self::evaluate_inject`] as if at `at` (unix seconds) for `context.hour` and
    /// `context.weekday`; for the "would this be allowed" tester.
    pub async fn evaluate_inject_at(
        &self,
        store: &Store,
        request: &InjectRequest<'_>,
        at: u64,
    ) -> Result<PolicyDecision, StoreError> {
        let compiled = self.policies_of(store, request.workspace, request.now).await?;
        Ok(self.decide_inject(&compiled.set, request, at))
    }

    /// Cedar's decision, then the rule that only a permit naming the action allows.
    fn decide_inject(&self, set: &PolicySet, r: &InjectRequest<'_>, at: u64) -> PolicyDecision {
        let built =
            inject_action().and_then(|action| Ok((self.inject_request(r, at, &action)?, action)));
        let ((request, entities), action) = match built {
            Ok(built) => built,
            Err(error) => {
                return PolicyDecision { errors: vec![error], ..PolicyDecision::default() };
            }
        };
        let response = self.authorizer.is_authorized(&request, set, &entities.entities);
        let diagnostics = response.diagnostics();
        let mut errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        if response.decision() != Decision::Allow {
            return PolicyDecision {
                allowed: false,
                approval_required: false,
                policy_ids: diagnostics.reason().map(ToString::to_string).collect(),
                errors,
            };
        }
        let (naming, unscoped): (Vec<_>, Vec<_>) = diagnostics
            .reason()
            .partition(|id| set.policy(id).is_some_and(|p| names(&p.action_constraint(), &action)));
        if naming.is_empty() {
            errors.extend(unscoped.iter().map(|id| {
                format!(
                    "policy {id} permits without naming Latchkey::Action::\"inject\" in its action scope, so it does not allow an inject"
                )
            }));
            return PolicyDecision { errors, ..PolicyDecision::default() };
        }
        PolicyDecision {
            allowed: true,
            approval_required: false,
            policy_ids: naming.iter().map(ToString::to_string).collect(),
            errors,
        }
    }

    /// The Cedar request of an inject and the entity store it is evaluated with. Built from
    /// typed values in the shape of the schema (a unit test validates it against the schema).
    fn inject_request(
        &self,
        r: &InjectRequest<'_>,
        at: u64,
        action: &EntityUid,
    ) -> Result<(Request, std::sync::Arc<super::CallEntities>), String> {
        let (hour, weekday) = hour_and_weekday(at);
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        let context = Context::from_pairs([
            (
                "lifetime".to_owned(),
                RestrictedExpression::new_long(i64::try_from(r.lifetime_secs).unwrap_or(i64::MAX)),
            ),
            ("command".to_owned(), string(r.command)),
            ("hour".to_owned(), RestrictedExpression::new_long(hour)),
            ("weekday".to_owned(), RestrictedExpression::new_long(weekday)),
            ("method".to_owned(), string(ANY_METHOD)),
            ("host".to_owned(), string(ANY_HOST)),
            ("path".to_owned(), string(ANY_PATH)),
            ("grant".to_owned(), string(GrantKind::None.as_str())),
        ])
        .map_err(|e| format!("context: {e}"))?;
        let entities = self.entities(&r.subject())?;
        let request = Request::new(
            entities.agent.clone(),
            action.clone(),
            entities.credential.clone(),
            context,
            None,
        )
        .map_err(|e| format!("request: {e}"))?;
        Ok((request, entities))
    }
}

/// `Latchkey::Action::"inject"`.
fn inject_action() -> Result<EntityUid, String> {
    let action_type =
        EntityTypeName::from_str("Latchkey::Action").map_err(|e| format!("action: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(action_type, EntityId::new(INJECT_ACTION)))
}

/// Whether a policy's action scope names `action` itself (not "any action").
fn names(scope: &ActionConstraint, action: &EntityUid) -> bool {
    match scope {
        ActionConstraint::Any => false,
        ActionConstraint::Eq(named) => named == action,
        ActionConstraint::In(named) => named.contains(action),
    }
}

#[cfg(test)]
mod tests {
    use cedar_policy::{Entities, Policy, PolicyId, Schema};

    use super::super::{DEFAULT_POLICIES, SCHEMA};
    use super::*;

    const T0: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a Friday

    fn engine() -> PolicyEngine {
        PolicyEngine::new().expect("the embedded schema and default policies are valid")
    }

    fn inject(owner: Owner) -> (InjectRequest<'static>, MemberId) {
        let agent_owner = MemberId::random();
        let request = InjectRequest {
            workspace: WorkspaceId::random(),
            agent: AgentId::random(),
            agent_name: "deploy-bot",
            agent_owner,
            credential: CredentialId::random(),
            credential_name: "openai",
            provider: "openai",
            credential_owner: owner,
            lifetime_secs: 3600,
            command: "python3",
            now: T0,
        };
        (request, agent_owner)
    }

    /// The policies of `sources`, each validated against the schema first.
    fn set(engine: &PolicyEngine, sources: &[(&str, &str)]) -> PolicySet {
        let mut set = PolicySet::new();
        for (id, source) in sources {
            if let Err(problems) = engine.check_policy(id, source) {
                panic!("{id} must validate against the schema: {problems:?}");
            }
            let policy = Policy::parse(Some(PolicyId::new(*id)), *source).expect("parses");
            set.add(policy).expect("adds");
        }
        set
    }

    fn defaults(engine: &PolicyEngine) -> PolicySet {
        let sources: Vec<(&str, &str)> =
            DEFAULT_POLICIES.iter().map(|p| (p.id, p.source)).collect();
        set(engine, &sources)
    }

    #[test]
    fn inject_requests_as_built_conform_to_the_schema() {
        let engine = engine();
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("schema parses");
        for owner in [Owner::Shared, Owner::Member(MemberId::random())] {
            let (r, _) = inject(owner);
            let action = inject_action().expect("the action's name parses");
            let (built, entities) = engine.inject_request(&r, T0, &action).expect("builds");
            Request::new(
                built.principal().expect("principal").clone(),
                built.action().expect("action").clone(),
                built.resource().expect("resource").clone(),
                built.context().expect("context").clone(),
                Some(&schema),
            )
            .expect("the inject request validates against the schema");
            Entities::from_entities(entities.entities.iter().cloned(), Some(&schema))
                .expect("the entities validate against the schema");
        }
    }

    #[test]
    fn the_default_policies_and_call_policies_never_allow_an_inject() {
        let engine = engine();
        let (r, owner) = inject(Owner::Shared);
        let decision = engine.decide_inject(&defaults(&engine), &r, T0);
        assert!(!decision.allowed, "permit-granted-calls is for calls, not injects: {decision:?}");
        assert!(decision.policy_ids.is_empty(), "no policy permits it: {decision:?}");

        let calls = set(
            &engine,
            &[("all-calls", "permit (principal, action in Latchkey::Action::\"call\", resource);")],
        );
        let decision = engine.decide_inject(&calls, &r, T0);
        assert!(!decision.allowed, "a permit of every call does not reach inject: {decision:?}");

        let mut own = r.clone();
        own.credential_owner = Owner::Member(owner);
        let decision = engine.decide_inject(&defaults(&engine), &own, T0);
        assert!(!decision.allowed, "not even the owner's own personal credential: {decision:?}");
    }

    #[test]
    fn a_permit_for_any_action_does_not_allow_an_inject_and_says_why() {
        let engine = engine();
        let (r, _) = inject(Owner::Shared);
        let any = set(&engine, &[("permit-all", "permit (principal, action, resource);")]);
        let decision = engine.decide_inject(&any, &r, T0);
        assert!(!decision.allowed, "an unscoped permit must not hand out credentials");
        assert!(decision.policy_ids.is_empty(), "it does not count as determining: {decision:?}");
        assert!(
            decision.errors.iter().any(|e| e.contains("permit-all") && e.contains("inject")),
            "the reason names the policy and the action: {decision:?}"
        );
    }

    #[test]
    fn a_permit_naming_inject_allows_within_its_conditions() {
        let engine = engine();
        let (mut r, _) = inject(Owner::Shared);
        let short = set(
            &engine,
            &[(
                "short-python-injects",
                r#"permit (principal, action == Latchkey::Action::"inject", resource)
when { context.lifetime <= 3600 && context.command == "python3" && resource.shared };"#,
            )],
        );
        let decision = engine.decide_inject(&short, &r, T0);
        assert_eq!(
            (decision.allowed, decision.policy_ids.as_slice()),
            (true, ["short-python-injects".to_owned()].as_slice()),
            "the naming permit allows and is reported: {decision:?}"
        );
        r.lifetime_secs = 3601;
        assert!(!engine.decide_inject(&short, &r, T0).allowed, "context.lifetime is the request's");
        r.lifetime_secs = 60;
        r.command = "bash";
        assert!(!engine.decide_inject(&short, &r, T0).allowed, "context.command is the request's");

        let listed = set(
            &engine,
            &[(
                "listed",
                r#"permit (principal, action in [Latchkey::Action::"GET", Latchkey::Action::"inject"], resource);"#,
            )],
        );
        assert!(engine.decide_inject(&listed, &r, T0).allowed, "naming it in a list counts too");
    }

    #[test]
    fn forbids_written_for_calls_still_validate_and_refuse_what_they_can() {
        let engine = engine();
        let (r, _) = inject(Owner::Shared);
        let permit = (
            "permit-inject",
            "permit (principal, action == Latchkey::Action::\"inject\", resource);",
        );
        for (id, forbid) in [
            (
                "one-host",
                "forbid (principal, action, resource) when { context.host != \"api.openai.com\" };",
            ),
            ("no-fridays", "forbid (principal, action, resource) when { context.weekday == 5 };"),
            (
                "standing-read-only",
                "forbid (principal, action, resource) when { context.grant == \"none\" } unless { action in [Latchkey::Action::\"GET\"] };",
            ),
        ] {
            let decision = engine.decide_inject(&set(&engine, &[permit, (id, forbid)]), &r, T0);
            assert_eq!(
                (decision.allowed, decision.policy_ids),
                (false, vec![id.to_owned()]),
                "{id}: an unscoped forbid still applies to injects"
            );
        }
        let path = (
            "no-admin",
            "forbid (principal, action, resource) when { context.path like \"/admin/*\" };",
        );
        assert!(
            engine.decide_inject(&set(&engine, &[permit, path]), &r, T0).allowed,
            "a path rule cannot see an inject's calls (documented): it validates and does not fire"
        );
    }
}
