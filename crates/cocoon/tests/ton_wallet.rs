//! `cocoon wallet` and `cocoon registry` on TON (`--settlement ton-devnet`), against the local TON
//! devnet (`contracts/devnet/`, started as cocoon-ton's own tests start it): funded by the
//! faucet, a proxy opened, the registry edited and read back, a client's deposit, refusals printed
//! as the rules' errors.

use crate::common::{cocoon, cocoon_ok, ton_devnet};
use serde_json::Value;

/// tonlib-core's test mnemonic: the registry owner's TON wallet.
const OWNER_WORDS: &str = "dose ice enrich trigger test dove century still betray gas diet dune \
    use other base gym mad law immense village world example praise game";

const TON: u64 = ton_devnet::TON;

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `cocoon COMMAND --json <TON flags> ARGS…`, which must succeed; its JSON answer.
fn on_ton(command: &str, ton: &[String], args: &[&str]) -> Value {
    let mut all = vec![command, "--json"];
    all.extend(ton.iter().map(String::as_str));
    all.extend_from_slice(args);
    json(&cocoon_ok(&all))
}

/// The same, expected to fail: its stderr.
fn refused_on_ton(command: &str, ton: &[String], args: &[&str]) -> String {
    let mut all = vec![command];
    all.extend(ton.iter().map(String::as_str));
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = cocoon(&all);
    assert!(!ok, "{all:?} succeeded: {stdout}");
    stderr
}

#[tokio::test]
async fn wallet_and_registry_run_on_the_ton_devnet() {
    let Some(devnet) = ton_devnet::devnet() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("owner.words");
    std::fs::write(&words, OWNER_WORDS).unwrap();
    let words = words.to_str().unwrap();

    // The owner's wallet is known from the key alone; the devnet deploys a root it owns.
    let owner = json(&cocoon_ok(&[
        "wallet",
        "--json",
        "--settlement",
        "ton",
        "--mnemonic-file",
        words,
        "address",
    ]));
    assert_eq!(
        owner["address"],
        "c04ad1885c127fe863abb00752fa844e6439bb04f264d70de7cea580b32637ab"
    );
    let owner_wallet: cocoon_ton::TonAddress =
        owner["ton_wallet"].as_str().unwrap().parse().unwrap();
    let root = ton_devnet::deploy_root(&devnet, &owner_wallet, &ton_devnet::test_params()).await;
    let api = format!("{}/api/v2", devnet.url);
    let root = root.to_hex();
    let ton: Vec<String> = [
        "--settlement",
        "ton-devnet",
        "--ton-api",
        &api,
        "--ton-root",
        &root,
    ]
    .map(String::from)
    .to_vec();
    let owner_ton = [ton.clone(), vec!["--mnemonic-file".into(), words.into()]].concat();

    // The owner funds its wallet and edits the registry; it reads back from the root.
    let funded = on_ton("wallet", &owner_ton, &["faucet", &(10 * TON).to_string()]);
    assert_eq!(funded["minted"], 10 * TON);
    let image = "ab".repeat(32);
    on_ton(
        "registry",
        &owner_ton,
        &["allow-image", "--role", "worker", &image],
    );
    on_ton(
        "registry",
        &owner_ton,
        &["set-price", "--price-per-token", "2000"],
    );
    let registry = on_ton("registry", &ton, &["show"]);
    assert_eq!(registry["version"], 2);
    assert_eq!(registry["prices"]["price_per_token"], 2000);
    assert_eq!(registry["worker_image_hashes"], serde_json::json!([image]));
    assert_eq!(registry["min_client_stake"], TON);
    let mut show = vec!["registry"];
    show.extend(ton.iter().map(String::as_str));
    show.push("show");
    let text = cocoon_ok(&show);
    assert!(text.contains("signed:  on TON"), "{text}");

    // A stranger's edit is the root's refusal, printed as the rule's error.
    let stranger = dir.path().join("stranger.key");
    cocoon_ok(&["registry", "keygen", stranger.to_str().unwrap()]);
    let stranger_ton = [
        ton.clone(),
        vec!["--owner-key".into(), stranger.to_str().unwrap().into()],
    ]
    .concat();
    let error = refused_on_ton("registry", &stranger_ton, &["publish"]);
    assert!(error.contains("rejected"), "{error}");

    // A proxy operator (the node's sealed key) funds its wallet and opens its proxy contract.
    let operator_dir = dir.path().join("operator");
    let operator_ton = [
        ton.clone(),
        [
            "--data-dir",
            operator_dir.to_str().unwrap(),
            "--image-label",
            "proxy",
        ]
        .map(String::from)
        .to_vec(),
    ]
    .concat();
    let operator = on_ton("wallet", &operator_ton, &["new"]);
    let operator = operator["address"].as_str().unwrap().to_owned();
    on_ton(
        "wallet",
        &operator_ton,
        &["faucet", &(10 * TON).to_string()],
    );
    let voucher_key = "77".repeat(32);
    let opened = on_ton(
        "wallet",
        &operator_ton,
        &[
            "authorize-proxy-key",
            "--key",
            &voucher_key,
            "--stake",
            &(2 * TON).to_string(),
        ],
    );
    assert_eq!(opened["proxy_contract"]["stake"], 2 * TON, "{opened}");
    assert_eq!(opened["proxy_contract"]["voucher_key"], voucher_key);

    // A client deposits with that proxy: the stake is the root's minimum.
    let client_dir = dir.path().join("client");
    let client_key = [
        "--data-dir",
        client_dir.to_str().unwrap(),
        "--image-label",
        "client",
    ]
    .map(String::from)
    .to_vec();
    let client_ton = [ton.clone(), client_key.clone()].concat();
    on_ton("wallet", &client_ton, &["faucet", &(10 * TON).to_string()]);
    let deposited = on_ton(
        "wallet",
        &client_ton,
        &["deposit", "--proxy", &operator, &(3 * TON).to_string()],
    );
    let channel = &deposited["client_contract"];
    assert_eq!(channel["balance"], 3 * TON, "{deposited}");
    assert_eq!(channel["stake"], TON, "{deposited}");
    assert_eq!(channel["status"]["state"], "open", "{deposited}");

    // Withdrawing into the stake is the channel's refusal, as the rules word it.
    let error = refused_on_ton(
        "wallet",
        &client_ton,
        &["withdraw", "--proxy", &operator, &(3 * TON).to_string()],
    );
    assert!(error.contains("rejected: only"), "{error}");
    assert!(error.contains("can be withdrawn"), "{error}");

    // Off the devnet, the faucet is refused.
    let mainnet_like: Vec<String> = ton
        .iter()
        .map(|arg| {
            if arg == "ton-devnet" {
                "ton".into()
            } else {
                arg.clone()
            }
        })
        .collect();
    let error = refused_on_ton(
        "wallet",
        &[mainnet_like, client_key].concat(),
        &["faucet", "1"],
    );
    assert!(error.contains("rejected"), "{error}");
    assert!(error.contains("faucet"), "{error}");
}

#[tokio::test]
async fn an_owner_deploys_a_new_networks_root_from_cocoon() {
    let Some(devnet) = ton_devnet::devnet() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("owner.key");
    let key = key.to_str().unwrap();
    let owner = cocoon_ok(&["registry", "keygen", key]).trim().to_owned();
    let api = format!("{}/api/v2", devnet.url);
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "registry",
            "--json",
            "--settlement",
            "ton-devnet",
            "--ton-api",
            &api,
            "--owner-key",
            key,
            "deploy-root",
        ];
        args.extend_from_slice(extra);
        cocoon(&args)
    };
    // An unfunded wallet cannot pay for the deployment: refused before anything is sent.
    let (ok, _, stderr) = deploy(&[]);
    assert!(!ok && stderr.contains("insufficient funds"), "{stderr}");

    let wallet =
        cocoon_ton::contracts::wallet_address(&owner.parse::<cocoon_money::AccountId>().unwrap().0)
            .unwrap();
    ton_devnet::faucet(&devnet, &wallet, 10 * TON).await;
    let (ok, stdout, stderr) = deploy(&[]);
    assert!(ok, "{stderr}");
    let root = json(&stdout)["root"].as_str().unwrap().to_owned();
    let show = |root: &str| {
        on_ton(
            "registry",
            &[
                "--settlement".into(),
                "ton-devnet".into(),
                "--ton-api".into(),
                api.clone(),
                "--ton-root".into(),
                root.into(),
            ],
            &["show"],
        )
    };
    let defaults = cocoon_money::Registry::new(owner.parse().unwrap());
    let shown = show(&root);
    assert_eq!(shown["version"], 0, "{shown}");
    assert_eq!(
        shown["min_proxy_stake"], defaults.min_proxy_stake,
        "{shown}"
    );
    assert_eq!(
        shown["prices"]["price_per_token"], defaults.prices.price_per_token,
        "{shown}"
    );

    // From a document (as `registry show --json` prints one): its terms and lists.
    let mut document = defaults.clone();
    document.prices.price_per_token = 2_500;
    document.min_client_stake = 3 * TON;
    let image = "cd".repeat(32);
    document.worker_image_hashes = vec![image.parse().unwrap()];
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let (ok, stdout, stderr) = deploy(&["--from", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let other = json(&stdout)["root"].as_str().unwrap().to_owned();
    assert_ne!(other, root, "other terms, another root");
    let shown = show(&other);
    assert_eq!(shown["prices"]["price_per_token"], 2_500, "{shown}");
    assert_eq!(shown["min_client_stake"], 3 * TON, "{shown}");
    assert_eq!(shown["worker_image_hashes"], serde_json::json!([image]));
}
