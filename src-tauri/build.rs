//! Tauri's build step: the configuration, the capabilities in `src-tauri/capabilities/`, and an
//! `allow-<command>` permission generated for each command (the capability lists the ones the
//! window may call; anything else is refused by the runtime).

const COMMANDS: &[&str] = &[
    "app_status",
    "create_workspace",
    "join_workspace",
    "finish_join",
    "list_providers",
    "list_integrations",
    "add_api_key",
    "connect_oauth",
    "reconnect",
    "cancel_connect",
    "disconnect",
    "set_integration_account",
    "list_agents",
    "create_agent",
    "regenerate_agent",
    "revoke_agent",
    "create_grant",
    "revoke_grant",
    "list_approvals",
    "approve_once",
    "approve_for",
    "deny",
    "list_policies",
    "policy_templates",
    "save_policy",
    "delete_policy",
    "check_call",
    "check_inject",
    "list_audit",
    "verify_audit",
    "export_audit",
    "list_members",
    "create_invite",
    "create_device_invite",
    "list_invites",
    "revoke_invite",
    "admit_device",
    "remove_member",
    "remove_device",
    "rotate_keys",
    "export_recovery_kit",
    "import_recovery_kit",
    "set_paused",
    "set_broker_ca",
    "lock",
    "unlock",
    "open_external",
];

fn main() {
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    // A build script reports failure by exiting non-zero with the reason on stderr.
    if let Err(error) = tauri_build::try_build(attributes) {
        #[allow(clippy::print_stderr, reason = "cargo shows a build script's stderr on failure")]
        {
            eprintln!("tauri build step failed: {error:#}");
        }
        std::process::exit(1);
    }
}
