//! Cedar policy: the published schema, the default policies, validation of the policies admins
//! write, and the evaluation the proxy runs on every call.
//!
//! Every workspace has its own policy set, stored one policy per row (`store::policies`). The
//! engine compiles a workspace's enabled policies on first use and caches the compiled set under
//! the workspace id; an evaluation only ever looks up, loads and runs the set of the request's own
//! workspace. The policy endpoints invalidate the entry of the workspace they change, so a change
//! takes effect on this broker's next request. Other replicas see it when their entry expires
//! ([`CACHE_TTL_SECS`]). The entity store of each agent and credential pair is cached as well
//! (building it is most of a cold evaluation's cost); an entry is reused only when every attribute
//! value matches the request, so a renamed agent or a changed owner is seen at once. Each
//! compiled set also remembers the decisions it made, keyed by everything Cedar reads (the entity
//! store, the action, the context values and the grant): Cedar's answer is a function of those,
//! so a repeated call (an agent polling one endpoint) is decided by a lookup. A changed policy
//! set starts with no decisions.
//!
//! Approval is modelled by evaluating twice: a call without a capability (`grant == "none"`) that
//! the policies deny is evaluated again as if a member had approved it with a single-use
//! capability (`grant == "single_use"`); if that would be allowed, the decision is
//! `approval_required`. Admins therefore write one set of rules for "allowed with a capability",
//! and the need for an approval follows from them. `docs/policy.md` explains the schema, the
//! defaults and examples.
//!
//! Releasing a credential into a command's environment is its own action, outside `"call"`,
//! decided in `inject.rs` ([`PolicyEngine::evaluate_inject`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, SchemaFragment, ValidationMode,
    Validator,
};
use latchkey_core::ids::{AgentId, CredentialId, MemberId, Owner, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::store::policies::{NewPolicy, StoredPolicy};
use crate::store::{Store, StoreError};

mod inject;

pub use inject::{INJECT_ACTION, InjectRequest, MAX_INJECT_LIFETIME_SECS};

/// The Cedar schema every workspace's policies are validated against (Cedar schema syntax).
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The policies a workspace starts with (and gets back if it deletes all of its policies).
pub const DEFAULT_POLICIES: [NewPolicy<'static>; 2] = [
    NewPolicy {
        id: "permit-granted-calls",
        description: "Agents may call with a capability through shared credentials and their \
                      owner's personal credentials.",
        source: include_str!("defaults/permit-granted-calls.cedar"),
        enabled: true,
    },
    NewPolicy {
        id: "forbid-foreign-personal-credentials",
        description: "No agent may use another member's personal credential, whatever it holds.",
        source: include_str!("defaults/forbid-foreign-personal-credentials.cedar"),
        enabled: true,
    },
];

/// Most policies one workspace may have.
pub const MAX_POLICIES: usize = 100;
/// Longest policy source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024;
/// How long a compiled policy set is reused before it is read again from the database, in
/// seconds. Changes made through this broker invalidate at once; this bounds how long another
/// replica keeps evaluating an outdated set.
pub const CACHE_TTL_SECS: u64 = 5;
/// Above this many cached workspaces, expired entries are dropped when a new one is added.
const CACHE_PRUNE_AT: usize = 1024;
/// Most cached entity stores (agent and credential pairs); the cache starts over when full.
const ENTITY_CACHE_MAX: usize = 4096;

/// The policy engine could not be set up (a bug in the embedded schema or default policies).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The embedded schema does not parse.
    #[error("embedded policy schema is invalid: {0}")]
    Schema(String),
    /// A default policy does not parse or validate against the schema.
    #[error("default policy {id} is invalid: {message}")]
    DefaultPolicy {
        /// The default policy's id.
        id: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What authorises a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// A single-use capability: a member approved exactly this call.
    SingleUse,
    /// A standing capability: a member granted a reuse window.
    Standing,
    /// No capability yet.
    None,
}

impl GrantKind {
    /// The value of `context.grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::SingleUse => "single_use",
            GrantKind::Standing => "standing",
            GrantKind::None => "none",
        }
    }
}

/// One call, as the policies see it.
#[derive(Debug, Clone)]
pub struct PolicyRequest<'a> {
    /// The workspace whose policies decide; the only set that is loaded or evaluated.
    pub workspace: WorkspaceId,
    /// The calling agent.
    pub agent: AgentId,
    /// Its display name.
    pub agent_name: &'a str,
    /// Its owner.
    pub agent_owner: MemberId,
    /// The credential the call uses.
    pub credential: CredentialId,
    /// The credential's name (`/p/{name}/...`).
    pub credential_name: &'a str,
    /// The credential's provider catalog id.
    pub provider: &'a str,
    /// Shared, or the member a personal credential belongs to.
    pub credential_owner: Owner,
    /// HTTP method, upper case; one of the schema's actions or the call is denied.
    pub method: &'a str,
    /// Upstream host (lower-cased, any port removed, before evaluation).
    pub host: &'a str,
    /// Upstream path (any query string removed before evaluation).
    pub path: &'a str,
    /// Broker time, unix seconds: gives `context.hour` and `context.weekday` (UTC).
    pub now: u64,
    /// What authorises the call.
    pub grant: GrantKind,
}

/// The outcome of an evaluation. `allowed` and `approval_required` are never both true.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyDecision {
    /// The call may proceed now.
    pub allowed: bool,
    /// The call is denied now, but the policies would allow it once a member approves it with a
    /// single-use capability: ask the agent owner's devices.
    pub approval_required: bool,
    /// The determining policies (Cedar's `diagnostics().reason()`): the permits that allowed, or
    /// the forbids that denied; for `approval_required`, the permits that would allow after
    /// approval. Empty for a denial because no policy permits.
    pub policy_ids: Vec<String>,
    /// Evaluation errors (each names its policy), for the audit log. A policy that errors is
    /// skipped, as Cedar does.
    pub errors: Vec<String>,
}

/// A problem found in a submitted policy, with its position in the submitted source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PolicyProblem {
    /// `syntax` (the text does not parse), `schema` (it does not validate against the schema in
    /// strict mode), `id` (its `@id` annotation disagrees with the policy id), or `warning`.
    pub kind: &'static str,
    /// What is wrong, in Cedar's words.
    pub message: String,
    /// Cedar's suggestion, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// 1-based line of the first offending character, if Cedar gives a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column (in characters) of the first offending character.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// Evaluates each workspace's own Cedar policies, caching the compiled set per workspace.
pub struct PolicyEngine {
    /// [`SCHEMA`] in Cedar's JSON schema format.
    schema_json: serde_json::Value,
    validator: Validator,
    authorizer: Authorizer,
    types: EntityTypes,
    /// The schema's action entities (with their membership in `"call"`), the base of every
    /// request's entity store.
    action_entities: Vec<Entity>,
    /// One action uid per HTTP method, in the order of [`METHODS`].
    actions: Vec<EntityUid>,
    cache: RwLock<HashMap<WorkspaceId, Arc<CompiledPolicies>>>,
    /// Entity stores by (agent, credential); see [`PolicyEngine::entities`].
    entity_cache: RwLock<HashMap<(AgentId, CredentialId), Arc<CallEntities>>>,
    /// Bumped by every invalidation: a load that started before an invalidation does not cache
    /// its (possibly outdated) result.
    epoch: AtomicU64,
}

/// The HTTP methods the schema has actions for.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Debug)]
struct EntityTypes {
    member: EntityTypeName,
    agent: EntityTypeName,
    credential: EntityTypeName,
}

/// A workspace's enabled policies, parsed and validated.
#[derive(Debug)]
struct CompiledPolicies {
    set: PolicySet,
    loaded_at: u64,
    /// Decisions this set made (see the module docs), at most [`DECISION_CACHE_MAX`].
    decisions: Mutex<HashMap<DecisionKey, Remembered>>,
}

/// Everything a Cedar evaluation of a call reads, apart from the policy set: the entity store
/// (by identity; the remembered entry holds it, so the address cannot be reused while it is
/// remembered), the method (which names the action), the context values and the grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    entities: usize,
    method: String,
    host: String,
    path: String,
    hour: i64,
    weekday: i64,
    grant: GrantKind,
}

#[derive(Debug)]
struct Remembered {
    entities: Arc<CallEntities>,
    decision: PolicyDecision,
}

/// Most decisions one workspace's compiled set remembers; past it, it forgets them all.
const DECISION_CACHE_MAX: usize = 4096;

impl CompiledPolicies {
    fn new(set: PolicySet, loaded_at: u64) -> Self {
        Self { set, loaded_at, decisions: Mutex::new(HashMap::new()) }
    }

    fn decisions(&self) -> std::sync::MutexGuard<'_, HashMap<DecisionKey, Remembered>> {
        // A map of plain values: a panic elsewhere cannot leave it half-updated.
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recall(&self, key: &DecisionKey, entities: &Arc<CallEntities>) -> Option<PolicyDecision> {
        self.decisions()
            .get(key)
            .filter(|r| Arc::ptr_eq(&r.entities, entities))
            .map(|r| r.decision.clone())
    }

    fn remember(&self, key: DecisionKey, entities: &Arc<CallEntities>, decision: &PolicyDecision) {
        let mut decisions = self.decisions();
        if decisions.len() >= DECISION_CACHE_MAX {
            decisions.clear();
        }
        decisions
            .insert(key, Remembered { entities: Arc::clone(entities), decision: decision.clone() });
    }
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.read().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("PolicyEngine").field("cached_workspaces", &cached).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Parses the embedded schema and checks the default policies against it.
    pub fn new() -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let type_name = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| PolicyError::Schema(e.to_string()))
        };
        let types = EntityTypes {
            member: type_name("Latchkey::Member")?,
            agent: type_name("Latchkey::Agent")?,
            credential: type_name("Latchkey::Credential")?,
        };
        let action_type = type_name("Latchkey::Action")?;
        let actions = METHODS
            .iter()
            .map(|m| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(m)))
            .collect();
        let action_entities = schema
            .action_entities()
            .map_err(|e| PolicyError::Schema(e.to_string()))?
            .iter()
            .cloned()
            .collect();
        let schema_json = SchemaFragment::from_cedarschema_str(SCHEMA)
            .map_err(|e| PolicyError::Schema(e.to_string()))?
            .0
            .to_json_value()
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        let engine = Self {
            schema_json,
            validator: Validator::new(schema),
            authorizer: Authorizer::new(),
            types,
            action_entities,
            actions,
            cache: RwLock::new(HashMap::new()),
            entity_cache: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        };
        for default in &DEFAULT_POLICIES {
            engine.check_policy(default.id, default.source).map_err(|problems| {
                PolicyError::DefaultPolicy {
                    id: default.id,
                    message: problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            })?;
        }
        Ok(engine)
    }

    /// Evaluates the workspace's own policies only (loaded from the store on first use, cached,
    /// invalidated by the policy endpoints). Never errors on a deny: `Err` only for store
    /// failures or a broken stored policy set (then deny + log).
    pub async fn evaluate(
        &self,
        store: &Store,
        request: &PolicyRequest<'_>,
    ) -> Result<PolicyDecision, StoreError> {
        self.evaluate_at(store, request, request.now).await
    }

    /// [`Self::evaluate`] as if the call happened at `at` (unix seconds): `context.hour` and
    /// `context.weekday` come from `at`, while loading and caching use `request.now`. For the
    /// "would this be allowed" tester.
    pub async fn evaluate_at(
        &self,
        store: &Store,
        request: &PolicyRequest<'_>,
        at: u64,
    ) -> Result<PolicyDecision, StoreError> {
        let compiled = self.policies_of(store, request.workspace, request.now).await?;
        Ok(self.decide(&compiled, request, at))
    }

    /// The schema in Cedar's JSON schema format, for policy editors.
    pub fn schema_json(&self) -> &serde_json::Value {
        &self.schema_json
    }

    /// Forgets the cached policy set of `workspace`; the next evaluation reads it again.
    pub fn invalidate(&self, workspace: WorkspaceId) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.remove(&workspace);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Parses `source` as exactly one static policy with id `id` and validates it against the
    /// schema in strict mode. `Ok` carries the validator's warnings; `Err` every problem found,
    /// with positions in `source`.
    pub fn check_policy(
        &self,
        id: &str,
        source: &str,
    ) -> Result<Vec<PolicyProblem>, Vec<PolicyProblem>> {
        let policy = Policy::parse(Some(PolicyId::new(id)), source).map_err(|errors| {
            errors.iter().map(|e| problem("syntax", e, source)).collect::<Vec<_>>()
        })?;
        if let Some(annotated) = policy.annotation("id")
            && annotated != id
        {
            return Err(vec![PolicyProblem {
                kind: "id",
                message: "the @id annotation differs from the policy id in the URL".to_owned(),
                help: Some("make them equal, or remove the annotation".to_owned()),
                line: None,
                column: None,
            }]);
        }
        let mut set = PolicySet::new();
        set.add(policy).map_err(|e| {
            vec![PolicyProblem {
                kind: "syntax",
                message: e.to_string(),
                help: None,
                line: None,
                column: None,
            }]
        })?;
        let result = self.validator.validate(&set, ValidationMode::Strict);
        // The validator reports a problem once per action the policy may apply to; one report
        // per position and advice is enough.
        let mut errors: Vec<PolicyProblem> = Vec::new();
        for found in result.validation_errors().map(|e| problem("schema", e, source)) {
            if !errors
                .iter()
                .any(|e| (e.line, e.column, &e.help) == (found.line, found.column, &found.help))
            {
                errors.push(found);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(result.validation_warnings().map(|w| problem("warning", w, source)).collect())
    }

    /// The compiled set of `workspace`: from the cache while fresh, else read, compiled and
    /// cached.
    async fn policies_of(
        &self,
        store: &Store,
        workspace: WorkspaceId,
        now: u64,
    ) -> Result<Arc<CompiledPolicies>, StoreError> {
        if let Some(compiled) = self.cached(workspace, now) {
            return Ok(compiled);
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let rows = store.policies(workspace, &DEFAULT_POLICIES, now).await?;
        let compiled = Arc::new(self.compile(workspace, &rows, now).map_err(|message| {
            tracing::error!(%workspace, error = %message, "stored policy set is broken; denying every call");
            StoreError::Corrupt(format!("policies of workspace {workspace}: {message}"))
        })?);
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::SeqCst) == epoch {
            if cache.len() >= CACHE_PRUNE_AT {
                cache.retain(|_, c| fresh(c, now));
            }
            cache.insert(workspace, Arc::clone(&compiled));
        }
        Ok(compiled)
    }

    fn cached(&self, workspace: WorkspaceId, now: u64) -> Option<Arc<CompiledPolicies>> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        cache.get(&workspace).filter(|c| fresh(c, now)).cloned()
    }

    /// Parses and validates the enabled stored policies. They were validated when written, so a
    /// failure means a hand-edited database or a schema change that broke them.
    fn compile(
        &self,
        workspace: WorkspaceId,
        rows: &[StoredPolicy],
        now: u64,
    ) -> Result<CompiledPolicies, String> {
        let mut set = PolicySet::new();
        for row in rows.iter().filter(|r| r.enabled) {
            let policy = Policy::parse(Some(PolicyId::new(&row.id)), &row.source)
                .map_err(|e| format!("policy {} does not parse: {e}", row.id))?;
            set.add(policy).map_err(|e| format!("policy {}: {e}", row.id))?;
        }
        let result = self.validator.validate(&set, ValidationMode::Strict);
        if let Some(error) = result.validation_errors().next() {
            return Err(format!("policy {} no longer validates: {error}", error.policy_id()));
        }
        tracing::debug!(%workspace, policies = rows.len(), "compiled policy set");
        Ok(CompiledPolicies::new(set, now))
    }

    /// Runs Cedar for `request` (at time `at`), with the second, hypothetical evaluation that
    /// decides `approval_required`. Both evaluations share the call's entities.
    fn decide(
        &self,
        compiled: &CompiledPolicies,
        request: &PolicyRequest<'_>,
        at: u64,
    ) -> PolicyDecision {
        let call = match self.call(request, at) {
            Ok(call) => call,
            Err(error) => {
                return PolicyDecision { errors: vec![error], ..PolicyDecision::default() };
            }
        };
        let key = DecisionKey {
            entities: Arc::as_ptr(&call.entities) as usize,
            method: call.method.clone(),
            host: call.host.clone(),
            path: call.path.clone(),
            hour: call.hour,
            weekday: call.weekday,
            grant: request.grant,
        };
        if let Some(decision) = compiled.recall(&key, &call.entities) {
            return decision;
        }
        let decision = self.decide_uncached(&compiled.set, &call, request.grant);
        compiled.remember(key, &call.entities, &decision);
        decision
    }

    /// [`Self::decide`] without the remembered decisions.
    fn decide_uncached(&self, set: &PolicySet, call: &Call, grant: GrantKind) -> PolicyDecision {
        let actual = self.authorize(set, call, grant);
        if actual.allowed || grant != GrantKind::None {
            return actual;
        }
        let approved = self.authorize(set, call, GrantKind::SingleUse);
        if !approved.allowed {
            return actual;
        }
        let mut errors = actual.errors;
        for error in approved.errors {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        PolicyDecision {
            allowed: false,
            approval_required: true,
            policy_ids: approved.policy_ids,
            errors,
        }
    }

    /// One Cedar evaluation of `call` with `context.grant` set to `grant`.
    fn authorize(&self, set: &PolicySet, call: &Call, grant: GrantKind) -> PolicyDecision {
        let request = match self.cedar_request(call, grant) {
            Ok(request) => request,
            Err(error) => {
                return PolicyDecision { errors: vec![error], ..PolicyDecision::default() };
            }
        };
        let response = self.authorizer.is_authorized(&request, set, &call.entities.entities);
        let diagnostics = response.diagnostics();
        PolicyDecision {
            allowed: response.decision() == Decision::Allow,
            approval_required: false,
            policy_ids: diagnostics.reason().map(ToString::to_string).collect(),
            errors: diagnostics.errors().map(ToString::to_string).collect(),
        }
    }

    /// Everything about the call except the grant.
    fn call(&self, r: &PolicyRequest<'_>, at: u64) -> Result<Call, String> {
        let action = METHODS
            .iter()
            .position(|m| *m == r.method)
            .and_then(|i| self.actions.get(i))
            .ok_or_else(|| {
                format!("method is not one of {}; the call is denied", METHODS.join(", "))
            })?
            .clone();
        let (hour, weekday) = hour_and_weekday(at);
        Ok(Call {
            action,
            entities: self.entities(r)?,
            method: r.method.to_owned(),
            host: normalise_host(r.host),
            path: strip_query(r.path).to_owned(),
            hour,
            weekday,
        })
    }

    /// The Cedar request of `call` with `grant`. Built from typed values in the shape of the
    /// schema (a unit test validates it against the schema), so it is not validated again here.
    fn cedar_request(&self, call: &Call, grant: GrantKind) -> Result<Request, String> {
        let context = Context::from_pairs([
            ("method".to_owned(), RestrictedExpression::new_string(call.method.clone())),
            ("host".to_owned(), RestrictedExpression::new_string(call.host.clone())),
            ("path".to_owned(), RestrictedExpression::new_string(call.path.clone())),
            ("hour".to_owned(), RestrictedExpression::new_long(call.hour)),
            ("weekday".to_owned(), RestrictedExpression::new_long(call.weekday)),
            ("grant".to_owned(), RestrictedExpression::new_string(grant.as_str().to_owned())),
        ])
        .map_err(|e| format!("context: {e}"))?;
        let principal = call.entities.agent.clone();
        let resource = call.entities.credential.clone();
        Request::new(principal, call.action.clone(), resource, context, None)
            .map_err(|e| format!("request: {e}"))
    }

    /// The entity store of the agent and credential of `r`, from the cache when an entry for the
    /// same agent and credential holds exactly the same attribute values, else built and cached.
    /// (Building it computes the action hierarchy's closure: most of a cold evaluation's cost.)
    fn entities(&self, r: &PolicyRequest<'_>) -> Result<Arc<CallEntities>, String> {
        let key = (r.agent, r.credential);
        {
            let cache = self.entity_cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = cache.get(&key).filter(|e| e.describes(r)) {
                return Ok(Arc::clone(hit));
            }
        }
        let built = Arc::new(self.build_entities(r)?);
        let mut cache = self.entity_cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= ENTITY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&built));
        Ok(built)
    }

    fn build_entities(&self, r: &PolicyRequest<'_>) -> Result<CallEntities, String> {
        let uid = |ty: &EntityTypeName, id: &dyn fmt::Display| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id.to_string()))
        };
        let agent = uid(&self.types.agent, &r.agent);
        let credential = uid(&self.types.credential, &r.credential);
        let agent_entity = Entity::new(
            agent.clone(),
            HashMap::from([
                ("name".to_owned(), RestrictedExpression::new_string(r.agent_name.to_owned())),
                (
                    "owner".to_owned(),
                    RestrictedExpression::new_entity_uid(uid(&self.types.member, &r.agent_owner)),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("agent entity: {e}"))?;
        let mut credential_attrs = HashMap::from([
            ("name".to_owned(), RestrictedExpression::new_string(r.credential_name.to_owned())),
            ("provider".to_owned(), RestrictedExpression::new_string(r.provider.to_owned())),
            (
                "shared".to_owned(),
                RestrictedExpression::new_bool(r.credential_owner == Owner::Shared),
            ),
        ]);
        if let Owner::Member(owner) = r.credential_owner {
            credential_attrs.insert(
                "owner".to_owned(),
                RestrictedExpression::new_entity_uid(uid(&self.types.member, &owner)),
            );
        }
        let credential_entity = Entity::new(credential.clone(), credential_attrs, HashSet::new())
            .map_err(|e| format!("credential entity: {e}"))?;
        let entities = Entities::from_entities(
            self.action_entities.iter().cloned().chain([agent_entity, credential_entity]),
            None,
        )
        .map_err(|e| format!("entities: {e}"))?;
        Ok(CallEntities {
            agent_name: r.agent_name.to_owned(),
            agent_owner: r.agent_owner,
            credential_name: r.credential_name.to_owned(),
            provider: r.provider.to_owned(),
            credential_owner: r.credential_owner,
            agent,
            credential,
            entities,
        })
    }
}

/// One call as Cedar sees it, minus the grant (which differs between the two evaluations).
struct Call {
    action: EntityUid,
    entities: Arc<CallEntities>,
    method: String,
    host: String,
    path: String,
    hour: i64,
    weekday: i64,
}

/// The entity store of one agent and one credential, with the attribute values it was built
/// from (so a renamed agent or a changed owner never reuses a stale entry).
#[derive(Debug)]
struct CallEntities {
    agent_name: String,
    agent_owner: MemberId,
    credential_name: String,
    provider: String,
    credential_owner: Owner,
    agent: EntityUid,
    credential: EntityUid,
    entities: Entities,
}

impl CallEntities {
    /// Whether this entry was built from exactly the attributes of `r` (ids are the cache key).
    fn describes(&self, r: &PolicyRequest<'_>) -> bool {
        self.agent_name == r.agent_name
            && self.agent_owner == r.agent_owner
            && self.credential_name == r.credential_name
            && self.provider == r.provider
            && self.credential_owner == r.credential_owner
    }
}

fn fresh(compiled: &CompiledPolicies, now: u64) -> bool {
    // A clock that went backwards also reloads.
    now >= compiled.loaded_at && now - compiled.loaded_at < CACHE_TTL_SECS
}

/// UTC hour of the day (0..=23) and ISO weekday (1 = Monday ..= 7 = Sunday) of unix time `secs`.
fn hour_and_weekday(secs: u64) -> (i64, i64) {
    let days = secs / 86_400;
    let hour = (secs % 86_400) / 3_600;
    // 1970-01-01 was a Thursday (ISO weekday 4).
    let weekday = (days + 3) % 7 + 1;
    (i64::try_from(hour).unwrap_or(0), i64::try_from(weekday).unwrap_or(1))
}

/// The host lower-cased and without a port (an IPv6 literal keeps its brackets).
fn normalise_host(host: &str) -> String {
    let without_port = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    };
    without_port.to_ascii_lowercase()
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// A Cedar diagnostic as a [`PolicyProblem`], its first label turned into a line and column.
fn problem(kind: &'static str, diagnostic: &dyn miette::Diagnostic, source: &str) -> PolicyProblem {
    let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (line, column) = line_and_column(source, offset);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    PolicyProblem {
        kind,
        message: diagnostic.to_string(),
        help: diagnostic.help().map(|h| h.to_string()),
        line,
        column,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
