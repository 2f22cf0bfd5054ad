//! Policy templates offered in the editor: complete Cedar policies against the published schema
//! (docs/policy.md), validated by the tests below against the broker's own policy engine.

use crate::view::PolicyTemplate;

/// The templates, in the order the editor lists them.
pub const TEMPLATES: [PolicyTemplate; 5] = [
    PolicyTemplate {
        id: "single-use-for-shared-deletes",
        title: "Approve every DELETE",
        description: "DELETE through a shared credential needs a single-use approval; a standing grant is not enough.",
        source: r#"@id("single-use-for-shared-deletes")
forbid (
  principal,
  action == Latchkey::Action::"DELETE",
  resource is Latchkey::Credential
)
when { resource.shared && context.grant != "single_use" };
"#,
    },
    PolicyTemplate {
        id: "standing-grants-read-only",
        title: "Standing grants are read-only",
        description: "With a standing grant agents may only GET and HEAD; writes need a single-use approval.",
        source: r#"@id("standing-grants-read-only")
forbid (principal, action, resource)
when { context.grant == "standing" }
unless { action in [Latchkey::Action::"GET", Latchkey::Action::"HEAD"] };
"#,
    },
    PolicyTemplate {
        id: "business-hours",
        title: "Business hours only",
        description: "Calls only Monday to Friday, 08:00 to 18:00 UTC.",
        source: r#"@id("business-hours")
forbid (principal, action in Latchkey::Action::"call", resource)
unless { context.weekday <= 5 && context.hour >= 8 && context.hour < 18 };
"#,
    },
    PolicyTemplate {
        id: "no-github-org-membership",
        title: "Keep agents away from GitHub org membership",
        description: "No call to GitHub's organisation membership endpoints.",
        source: r#"@id("no-github-org-membership")
forbid (principal, action in Latchkey::Action::"call", resource)
when { resource.provider == "github" && context.path like "/orgs/*/members*" };
"#,
    },
    PolicyTemplate {
        id: "short-named-injects",
        title: "Short injects for named commands",
        description: "latchkey run --inject may hand a credential to python3, node or pytest for up to an hour: shared ones, and a member's own personal ones to their own agents.",
        source: r#"@id("short-named-injects")
permit (
  principal is Latchkey::Agent,
  action == Latchkey::Action::"inject",
  resource is Latchkey::Credential
)
when {
  context.lifetime <= 3600 &&
  ["python3", "node", "pytest"].contains(context.command) &&
  (resource.shared || (resource has owner && resource.owner == principal.owner))
};
"#,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_validates_against_the_published_schema() {
        let engine =
            latchkey_server::policy::PolicyEngine::new().expect("the embedded schema loads");
        for template in &TEMPLATES {
            let checked = engine.check_policy(template.id, template.source);
            assert!(
                checked.as_ref().is_ok_and(Vec::is_empty),
                "template {} must save without problems or warnings: {checked:?}",
                template.id
            );
        }
    }

    #[test]
    fn template_ids_are_unique_and_match_their_annotation() {
        let mut ids: Vec<_> = TEMPLATES.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            TEMPLATES.len(),
            "two templates with one id would overwrite each other"
        );
        for t in &TEMPLATES {
            assert!(t.source.starts_with(&format!("@id(\"{}\")", t.id)), "{} annotation", t.id);
        }
    }
}
