//! The tray: a plain menu model built from the app's state (testable without a tray host), the
//! actions its item ids stand for, and the badge drawn on the icon.

use crate::view::Approval;

/// Pending requests listed in the menu; the rest are behind "more".
pub const MAX_LISTED: usize = 5;

/// Menu item ids (the approval items are `approval:<id>`).
pub mod ids {
    pub const OPEN: &str = "open";
    pub const APPROVALS: &str = "approvals";
    pub const PAUSE: &str = "pause";
    pub const QUIT: &str = "quit";
    pub const APPROVAL_PREFIX: &str = "approval:";
}

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayModel {
    /// Hover text.
    pub tooltip: String,
    /// Text beside the icon where the platform shows one: the pending count, if any.
    pub title: Option<String>,
    /// Whether the icon carries the "waiting" badge.
    pub badge: bool,
    pub items: Vec<MenuEntry>,
}

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuEntry {
    /// A clickable (or, when `enabled` is false, informative) item.
    Item {
        id: String,
        label: String,
        enabled: bool,
    },
    /// A check item.
    Check {
        id: String,
        label: String,
        checked: bool,
    },
    Separator,
}

/// What a click on a menu item asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayAction {
    /// Show the main window.
    Open,
    /// Show the approvals screen.
    ShowApprovals,
    /// Show one request in the approvals screen.
    ShowApproval(String),
    /// Pause every agent, or resume them.
    TogglePause,
    Quit,
}

impl TrayAction {
    /// The action of the menu item `id`; `None` for an id the model never produces.
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            ids::OPEN => Some(Self::Open),
            ids::APPROVALS => Some(Self::ShowApprovals),
            ids::PAUSE => Some(Self::TogglePause),
            ids::QUIT => Some(Self::Quit),
            other => other
                .strip_prefix(ids::APPROVAL_PREFIX)
                .filter(|id| !id.is_empty())
                .map(|id| Self::ShowApproval(id.to_owned())),
        }
    }
}

/// What the tray is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrayState {
    /// Whether this computer belongs to a workspace.
    pub set_up: bool,
    /// Whether agents are paused.
    pub paused: bool,
    /// Pending requests, oldest first.
    pub pending: Vec<Approval>,
}

impl TrayModel {
    /// The tray for `state`.
    pub fn build(state: &TrayState) -> Self {
        let count = state.pending.len();
        let mut items = Vec::new();
        if state.set_up {
            let header = match count {
                0 => "No requests waiting".to_owned(),
                1 => "1 request waiting".to_owned(),
                n => format!("{n} requests waiting"),
            };
            items.push(MenuEntry::Item { id: "header".to_owned(), label: header, enabled: false });
            for approval in state.pending.iter().take(MAX_LISTED) {
                items.push(MenuEntry::Item {
                    id: format!("{}{}", ids::APPROVAL_PREFIX, approval.id),
                    label: summary(approval),
                    enabled: true,
                });
            }
            if count > MAX_LISTED {
                items.push(MenuEntry::Item {
                    id: ids::APPROVALS.to_owned(),
                    label: format!("{} more…", count - MAX_LISTED),
                    enabled: true,
                });
            }
            items.push(MenuEntry::Separator);
        }
        items.push(MenuEntry::Item {
            id: ids::OPEN.to_owned(),
            label: "Open Latchkey".to_owned(),
            enabled: true,
        });
        if state.set_up {
            items.push(MenuEntry::Check {
                id: ids::PAUSE.to_owned(),
                label: "Pause all agents".to_owned(),
                checked: state.paused,
            });
        }
        items.push(MenuEntry::Separator);
        items.push(MenuEntry::Item {
            id: ids::QUIT.to_owned(),
            label: "Quit Latchkey".to_owned(),
            enabled: true,
        });
        let tooltip = match (state.set_up, state.paused, count) {
            (false, _, _) => "Latchkey: not set up".to_owned(),
            (true, true, _) => "Latchkey: all agents paused".to_owned(),
            (true, false, 0) => "Latchkey".to_owned(),
            (true, false, 1) => "Latchkey: 1 request waiting".to_owned(),
            (true, false, n) => format!("Latchkey: {n} requests waiting"),
        };
        Self { tooltip, title: (count > 0).then(|| count.to_string()), badge: count > 0, items }
    }
}

/// `agent: GET api.github.com/repos/x via github`, cut to a menu-friendly length.
pub fn summary(approval: &Approval) -> String {
    let text = format!(
        "{}: {} {}{} via {}",
        approval.agent_name,
        approval.method,
        approval.host,
        approval.path,
        approval.credential_name
    );
    const MAX: usize = 72;
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

/// `rgba` (a `width` x `height` image) with a filled red dot in its top-right quarter: the
/// "requests waiting" badge.
pub fn with_badge(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = rgba.to_vec();
    let size = width.min(height) as f32;
    let radius = size * 0.22;
    let (cx, cy) = (width as f32 - radius - 1.0, radius + 1.0);
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= radius * radius {
                let i = ((y * width + x) * 4) as usize;
                if let Some(pixel) = out.get_mut(i..i + 4) {
                    pixel.copy_from_slice(&[0xe5, 0x3e, 0x3e, 0xff]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, agent: &str) -> Approval {
        Approval {
            id: id.to_owned(),
            status: "pending",
            agent: format!("agent-{agent}"),
            agent_name: agent.to_owned(),
            credential: "c".to_owned(),
            credential_name: "github".to_owned(),
            method: "POST".to_owned(),
            host: "api.github.com".to_owned(),
            path: "/repos/acme/app/issues".to_owned(),
            query_keys: vec![],
            body_size: Some(120),
            policy_ids: vec![],
            created_at: 1,
            expires_at: 121,
            answered_at: None,
            answered_by: None,
            answerable: true,
        }
    }

    fn labels(model: &TrayModel) -> Vec<String> {
        model
            .items
            .iter()
            .map(|e| match e {
                MenuEntry::Item { label, .. } | MenuEntry::Check { label, .. } => label.clone(),
                MenuEntry::Separator => "---".to_owned(),
            })
            .collect()
    }

    #[test]
    fn without_a_workspace_the_tray_only_opens_and_quits() {
        let model = TrayModel::build(&TrayState::default());
        assert_eq!(labels(&model), ["Open Latchkey", "---", "Quit Latchkey"]);
        assert!(!model.badge, "nothing can be waiting before set-up");
    }

    #[test]
    fn pending_requests_are_listed_and_each_opens_its_approval() {
        let state = TrayState {
            set_up: true,
            paused: false,
            pending: vec![approval("a1", "ci-bot"), approval("a2", "triage")],
        };
        let model = TrayModel::build(&state);
        assert_eq!(model.title.as_deref(), Some("2"), "the count sits beside the icon");
        assert!(model.badge);
        assert_eq!(model.tooltip, "Latchkey: 2 requests waiting");
        assert_eq!(labels(&model)[0], "2 requests waiting");
        assert_eq!(
            labels(&model)[1],
            "ci-bot: POST api.github.com/repos/acme/app/issues via github",
            "a person must see who wants what before clicking"
        );
        let ids: Vec<_> = model
            .items
            .iter()
            .filter_map(|e| match e {
                MenuEntry::Item { id, enabled: true, .. } => TrayAction::from_id(id),
                _ => None,
            })
            .collect();
        assert_eq!(
            ids[..2],
            [TrayAction::ShowApproval("a1".into()), TrayAction::ShowApproval("a2".into())]
        );
    }

    #[test]
    fn more_than_five_requests_are_summed_up_behind_one_item() {
        let pending: Vec<_> = (0..8).map(|i| approval(&format!("a{i}"), "bot")).collect();
        let model = TrayModel::build(&TrayState { set_up: true, paused: false, pending });
        let listed = model
            .items
            .iter()
            .filter(
                |e| matches!(e, MenuEntry::Item { id, .. } if id.starts_with(ids::APPROVAL_PREFIX)),
            )
            .count();
        assert_eq!(listed, MAX_LISTED);
        assert!(labels(&model).contains(&"3 more…".to_owned()));
        assert_eq!(TrayAction::from_id(ids::APPROVALS), Some(TrayAction::ShowApprovals));
    }

    #[test]
    fn the_pause_item_is_checked_while_agents_are_paused() {
        let model = TrayModel::build(&TrayState { set_up: true, paused: true, pending: vec![] });
        assert!(model.items.contains(&MenuEntry::Check {
            id: ids::PAUSE.into(),
            label: "Pause all agents".into(),
            checked: true
        }));
        assert_eq!(model.tooltip, "Latchkey: all agents paused");
        assert!(!model.badge && model.title.is_none(), "no badge when nothing waits");
    }

    #[test]
    fn unknown_and_empty_ids_are_no_action() {
        assert_eq!(TrayAction::from_id("header"), None, "the header is informative only");
        assert_eq!(TrayAction::from_id(ids::APPROVAL_PREFIX), None);
        assert_eq!(TrayAction::from_id(ids::QUIT), Some(TrayAction::Quit));
        assert_eq!(TrayAction::from_id(ids::PAUSE), Some(TrayAction::TogglePause));
    }

    #[test]
    fn long_summaries_are_cut_on_a_character_boundary() {
        let mut long = approval("a", "bot");
        long.path = format!("/{}", "é".repeat(100));
        let text = summary(&long);
        assert_eq!(text.chars().count(), 72);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn the_badge_colours_the_top_right_corner_only() {
        let (w, h) = (32u32, 32u32);
        let base = vec![0u8; (w * h * 4) as usize];
        let badged = with_badge(&base, w, h);
        let pixel = |x: u32, y: u32| &badged[((y * w + x) * 4) as usize..][..4];
        assert_eq!(pixel(w - 8, 7), [0xe5, 0x3e, 0x3e, 0xff], "the dot sits top right");
        assert_eq!(pixel(2, h - 3), [0, 0, 0, 0], "the rest of the icon is untouched");
        assert_eq!(badged.len(), base.len());
    }
}
