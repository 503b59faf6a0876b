//! Hot reload: a valid file changes behaviour without dropping in-flight requests; an invalid
//! one is rejected whole, reports every error and the old policy keeps serving.

use std::sync::Arc;

use approval_gateway::app::App;
use approval_gateway::config;
use reqwest::StatusCode;

use crate::support::gateway::{agent, sqlite_url, POLICY, SECRET};
use crate::support::upstream::{FakeUpstream, Reply};

fn file_text(upstream: &str, store: &str, policy: &str) -> String {
    format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[upstream]\nurl = \"{upstream}\"\n\
         [store]\nurl = \"{store}\"\n[jwt]\nalgorithms = [\"HS256\"]\nhs_secret_env = \"TEST_JWT_SECRET\"\n{policy}"
    )
}

fn env(k: &str) -> Option<String> {
    match k {
        "TEST_JWT_SECRET" => Some(SECRET.to_owned()),
        "MOLECULE_PLATFORM_APPROVAL_GATE" => Some("enforce".to_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn reload_swaps_the_policy_whole_and_rejects_invalid_files_whole() {
    let upstream = FakeUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("ag-reload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let store = sqlite_url();
    std::fs::write(&path, file_text(&upstream.url(), &store, POLICY)).unwrap();

    let config = config::load(&path, &env).unwrap();
    let app = App::build(config)
        .await
        .unwrap()
        .reload_from(path.clone(), Box::new(env));
    let reloader = Arc::clone(app.reloader().unwrap());
    let (proxy, admin, store_handle) = (app.proxy_addr(), app.admin_addr(), app.store().clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    while !store_handle.is_ready() {
        tokio::task::yield_now().await;
    }
    let client = reqwest::Client::new();
    let delete = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .delete(format!("http://{proxy}{path}"))
                .bearer_auth(agent())
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        delete("/workspaces/ws-1").await.status(),
        StatusCode::ACCEPTED
    );

    // An in-flight request (held by the upstream) survives the reload.
    upstream.set_reply(Reply::Hold);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(format!("http://{proxy}/slow"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    upstream.wait_for_requests(1).await;

    // Valid: the delete route is gone, a new route gates restarts.
    let new_policy = POLICY
        .replace(
            "action = \"delete_workspace\"\nmethod = \"DELETE\"",
            "action = \"restart\"\nmethod = \"POST\"",
        )
        .replace(
            "path = \"/workspaces/{id}\"\n",
            "path = \"/workspaces/{id}/restart\"\n",
        );
    std::fs::write(&path, file_text(&upstream.url(), &store, &new_policy)).unwrap();
    reloader.reload().expect("valid reload");
    upstream.release();
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert_eq!(
        delete("/workspaces/ws-1").await.status(),
        StatusCode::OK,
        "no longer gated"
    );
    let restart = client
        .post(format!("http://{proxy}/workspaces/ws-1/restart"))
        .bearer_auth(agent())
        .send()
        .await
        .unwrap();
    assert_eq!(restart.status(), StatusCode::ACCEPTED, "newly gated");

    // Invalid: two problems, both reported; the previous policy keeps serving.
    let broken = format!("{new_policy}\n[[routes]]\naction = \"\"\nmethod = \"delete\"\npath = \"/x\"\nscope = \"s\"\n");
    std::fs::write(&path, file_text(&upstream.url(), &store, &broken)).unwrap();
    let errors = reloader.reload().expect_err("invalid reload");
    assert!(errors.0.len() >= 2, "{errors}");
    assert_eq!(
        delete("/workspaces/ws-2").await.status(),
        StatusCode::OK,
        "old policy still serves"
    );

    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"approval_gateway_config_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"approval_gateway_config_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
