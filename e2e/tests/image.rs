//! The operator image `make image` builds (operator/image/build.sh, assemble.py): its
//! metadata, its reproducibility, and the image run by a real OCI runtime.
//!
//! The static release binary is built once per test run (the first test to need it runs
//! build.sh; cargo makes that a no-op when nothing changed) and every test reuses it. The
//! runtime tests unpack the image with umoci (which checks every blob's digest) and run it
//! with runc, as uid 65532 on a read-only root filesystem; one of them proves that the
//! binary resolves a cluster-style DNS name (search domain, ndots) inside the image, with
//! a DNS server on 127.0.0.153 that this test runs. Needs root, runc and umoci (`.ci/run`
//! installs them): a missing one fails the tests, never skips them.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

fn build_script() -> PathBuf {
    repo_root().join("operator/image/build.sh")
}

/// What operator/image/build.sh printed, plus the binary it put in the image.
#[derive(Debug)]
struct Built {
    summary: Value,
    archive: PathBuf,
    binary: PathBuf,
}

fn run_checked(command: &mut Command) -> Result<Output> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    ensure!(
        output.status.success(),
        "{shown}: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn summary_of(output: &Output) -> Result<Value> {
    let stdout = String::from_utf8(output.stdout.clone())?;
    let line = stdout.lines().last().context("build.sh printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("build.sh printed {line:?}"))
}

/// The image of this checkout, built once for all tests of this file.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let build = || -> Result<Built> {
            let output = run_checked(Command::new("bash").arg(build_script()))?;
            let summary = summary_of(&output)?;
            let archive = PathBuf::from(summary["archive"].as_str().context("no archive")?);
            let target = std::fs::read_to_string(repo_root().join("operator/image/versions.env"))?
                .lines()
                .find_map(|l| l.strip_prefix("IMAGE_RUST_TARGET="))
                .context("versions.env has no IMAGE_RUST_TARGET")?
                .to_owned();
            let binary = repo_root().join(format!("target/{target}/release/octopus-operator"));
            Ok(Built {
                summary,
                archive,
                binary,
            })
        };
        build().map_err(|e| format!("{e:#}"))
    });
    match built {
        Ok(built) => built,
        Err(e) => panic!("make image failed: {e}"),
    }
}

/// The archive unpacked into a fresh directory (an OCI layout plus manifest.json).
fn unpack_archive(archive: &Path) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    run_checked(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir.path()),
    )?;
    Ok(dir)
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&std::fs::read(path).with_context(|| path.display().to_string())?)
        .with_context(|| format!("{} is not JSON", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn sha256_of(path: &Path) -> Result<String> {
    let output = run_checked(Command::new("sha256sum").arg(path))?;
    let hex = String::from_utf8(output.stdout)?;
    Ok(format!(
        "sha256:{}",
        hex.split_whitespace().next().unwrap_or_default()
    ))
}

fn git(args: &[&str]) -> Result<String> {
    let output = run_checked(Command::new("git").arg("-C").arg(repo_root()).args(args))?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[test]
fn image_metadata_user_entrypoint_labels_and_contents() -> Result<()> {
    let built = built();
    let layout = unpack_archive(&built.archive)?;
    let layout = layout.path();
    let version = env!("CARGO_PKG_VERSION");
    let reference = format!("octopus-operator:{version}");
    assert_eq!(built.summary["image"], reference.as_str());

    // The chart (and install.yaml) run exactly this image by default.
    let chart = std::fs::read_to_string(repo_root().join("charts/octopus-operator/Chart.yaml"))?;
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "{chart}"
    );
    let install = std::fs::read_to_string(repo_root().join("charts/install.yaml"))?;
    assert!(
        install.contains(&format!("image: \"{reference}\"")),
        "install.yaml does not run {reference}"
    );

    assert_eq!(
        read_json(&layout.join("oci-layout"))?,
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"].as_array().context("no manifests")?;
    assert_eq!(manifests.len(), 1, "{index}");
    let descriptor = &manifests[0];
    assert_eq!(
        descriptor["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/{reference}")
    );
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        version
    );
    let digest = descriptor["digest"].as_str().context("no digest")?;
    assert_eq!(built.summary["digest"], digest);
    // Every blob is what its name says.
    for entry in std::fs::read_dir(layout.join("blobs/sha256"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert_eq!(sha256_of(&path)?, format!("sha256:{name}"));
    }

    let manifest = read_json(&blob(layout, digest))?;
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().context("no layers")?;
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().context("no config")?,
    ))?;
    let run = &config["config"];
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        run["User"], "65532:65532",
        "non-root, numeric: no /etc/passwd"
    );
    assert_eq!(
        run["Entrypoint"],
        json!(["/usr/local/bin/octopus-operator"])
    );
    assert_eq!(run["Cmd"], json!(["run"]));

    let labels = &run["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.title"], "octopus-operator");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let source = labels["org.opencontainers.image.source"]
        .as_str()
        .context("no source label")?;
    assert!(source.starts_with("https://"), "{source}");
    // Revision and creation time are the commit's: nothing of the build machine or clock.
    let head = git(&["rev-parse", "HEAD"])?;
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .context("no revision label")?;
    assert!(
        revision == head || revision == format!("{head}-dirty"),
        "{revision} vs HEAD {head}"
    );
    let committed: i64 = git(&["log", "-1", "--format=%ct"])?.parse()?;
    let created = jiff::Timestamp::from_second(committed)?.strftime("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(config["created"], created.to_string());
    assert_eq!(
        labels["org.opencontainers.image.created"],
        created.to_string()
    );

    // docker load reads manifest.json.
    let docker = read_json(&layout.join("manifest.json"))?;
    assert_eq!(docker[0]["RepoTags"], json!([reference]));
    assert!(
        layout
            .join(docker[0]["Config"].as_str().unwrap_or("-"))
            .is_file()
    );

    // The layer: only the binary and the CA bundle (and their directories), owned by root,
    // read-only for the user, one fixed time.
    let layer = blob(
        layout,
        layers[0]["digest"].as_str().context("no layer digest")?,
    );
    let listing = run_checked(
        Command::new("tar")
            .env("TZ", "UTC")
            .args([
                "--list",
                "--verbose",
                "--numeric-owner",
                "--full-time",
                "-z",
                "-f",
            ])
            .arg(&layer),
    )?;
    let listing = String::from_utf8(listing.stdout)?;
    let mut paths = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<_> = line.split_whitespace().collect();
        let [mode, owner, _size, date, time, path] = fields[..] else {
            bail!("unexpected tar listing line {line:?}");
        };
        assert_eq!(owner, "0/0", "{line}");
        assert!(
            created.to_string().starts_with(date) && created.to_string().contains(time),
            "{line}: not the commit time {created}"
        );
        let expected = match path.trim_end_matches('/') {
            "usr/local/bin/octopus-operator" => "-rwxr-xr-x",
            "etc/ssl/certs/ca-certificates.crt" => "-rw-r--r--",
            _ => "drwxr-xr-x",
        };
        assert_eq!(mode, expected, "{line}");
        paths.insert(path.trim_end_matches('/').to_owned());
    }
    assert_eq!(
        paths,
        BTreeSet::from(
            [
                "etc",
                "etc/ssl",
                "etc/ssl/certs",
                "etc/ssl/certs/ca-certificates.crt",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/octopus-operator",
            ]
            .map(str::to_owned)
        )
    );
    println!(
        "image {reference} {digest}: archive {} bytes, layer {} bytes compressed, {} bytes \
         unpacked",
        built.summary["archiveBytes"],
        built.summary["layerBytes"],
        built.summary["uncompressedBytes"]
    );
    Ok(())
}

#[test]
fn two_assemblies_in_fresh_directories_give_the_same_digest() -> Result<()> {
    let built = built();
    let mut digests = Vec::new();
    let mut archives = Vec::new();
    // Different umask, file modes and file times of the inputs, fresh directories.
    for (umask, mode, time) in [("022", "755", "2001-02-03 04:05:06"), ("077", "700", "now")] {
        let dir = tempfile::tempdir()?;
        let binary = dir.path().join("octopus-operator");
        std::fs::copy(&built.binary, &binary)?;
        run_checked(Command::new("chmod").arg(mode).arg(&binary))?;
        run_checked(Command::new("touch").arg("-d").arg(time).arg(&binary))?;
        let output = dir.path().join("out/image.tar");
        let script = format!("umask {umask} && exec bash \"$0\" --binary \"$1\" --output \"$2\"",);
        let output_summary = run_checked(
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .arg(build_script())
                .arg(&binary)
                .arg(&output),
        )?;
        digests.push(summary_of(&output_summary)?["digest"].clone());
        archives.push(std::fs::read(&output)?);
    }
    assert_eq!(digests[0], digests[1]);
    assert!(
        archives[0] == archives[1],
        "the archives differ byte for byte"
    );
    // And the same as `make image` made from the same binary.
    assert_eq!(digests[0], built.summary["digest"]);
    assert!(archives[0] == std::fs::read(&built.archive)?);
    println!("digest of both assemblies: {}", digests[0]);
    Ok(())
}

/// An OCI bundle of the image (umoci unpack, which checks the blobs' digests) whose
/// config.json is then adjusted by `adjust`.
struct Bundle {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(adjust: impl FnOnce(&mut Value)) -> Result<Self> {
        let layout = unpack_archive(&built().archive)?;
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("bundle");
        run_checked(
            Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!(
                    "{}:{}",
                    layout.path().display(),
                    env!("CARGO_PKG_VERSION")
                ))
                .arg(&bundle),
        )?;
        let path = bundle.join("config.json");
        let mut config = read_json(&path)?;
        // As the chart runs it: read-only root, no capabilities, no new privileges.
        config["root"]["readonly"] = true.into();
        config["process"]["terminal"] = false.into();
        config["process"]["noNewPrivileges"] = true.into();
        config["process"]["capabilities"] = json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
        adjust(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let id = format!(
            "octopus-image-test-{}",
            (0..8).map(|_| fastrand::alphanumeric()).collect::<String>()
        );
        Ok(Self {
            dir,
            state: tempfile::tempdir()?,
            id,
        })
    }

    fn runc(&self) -> Command {
        let mut command = Command::new("runc");
        command.arg("--root").arg(self.state.path());
        command
    }

    fn run_command(&self) -> Command {
        let mut command = self.runc();
        command
            .arg("run")
            .arg("--bundle")
            .arg(self.dir.path().join("bundle"))
            .arg(&self.id);
        command
    }

    /// Runs the container to its end and returns what it printed.
    fn run(&self) -> Result<String> {
        let output = run_checked(&mut self.run_command())?;
        Ok(String::from_utf8(output.stdout)?)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

fn with_args(args: &[&str]) -> impl FnOnce(&mut Value) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    move |config| {
        let mut all = vec![json!("/usr/local/bin/octopus-operator")];
        all.extend(args.into_iter().map(Value::from));
        config["process"]["args"] = all.into();
    }
}

#[test]
fn runc_runs_version_and_plan_as_uid_65532_on_a_read_only_root() -> Result<()> {
    let bundle = Bundle::new(with_args(&["--version"]))?;
    let config = read_json(&bundle.dir.path().join("bundle/config.json"))?;
    assert_eq!(config["process"]["user"]["uid"], 65532, "{config}");
    assert_eq!(config["process"]["user"]["gid"], 65532);
    let version = bundle.run()?;
    println!("runc: octopus-operator --version\n{version}");
    let head = git(&["rev-parse", "HEAD"])?;
    assert!(
        version.starts_with(&format!(
            "octopus-operator {} ({head}",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    drop(bundle);

    let bundle = Bundle::new(with_args(&[
        "plan",
        "--from",
        "2024.1.100",
        "--to",
        "2024.1.200",
        "-o",
        "json",
    ]))?;
    let plan = bundle.run()?;
    println!("runc: octopus-operator plan --from 2024.1.100 --to 2024.1.200 -o json\n{plan}");
    let plan: Value = serde_json::from_str(&plan).context("plan -o json")?;
    assert_eq!(plan["from"], "2024.1.100");
    assert_eq!(plan["to"], "2024.1.200");
    assert_eq!(plan["allowed"], true);
    assert_eq!(plan["strategy"], "rolling");
    Ok(())
}

/// A DNS server for one test on 127.0.0.153:53 (UDP): answers A queries for `name` with
/// 127.0.0.1, everything else with no answer, and records every name asked.
struct DnsServer {
    asked: Arc<Mutex<Vec<String>>>,
}

impl DnsServer {
    const ADDRESS: &str = "127.0.0.153:53";

    fn start(name: &str) -> Result<Self> {
        let socket = UdpSocket::bind(Self::ADDRESS).context("binding 127.0.0.153:53 (root?)")?;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (record, name) = (asked.clone(), name.to_owned());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                if let Some((qname, reply)) = dns_reply(&buf[..len], &name) {
                    record.lock().expect("lock").push(qname);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        Ok(Self { asked })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

/// The reply to one DNS query (RFC 1035 wire format): the question's name, and the
/// response with an A record 127.0.0.1 when it asks for `name`'s address.
fn dns_reply(query: &[u8], name: &str) -> Option<(String, Vec<u8>)> {
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).into_owned());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let qname = labels.join(".");
    let answer = qtype == 1 && qname.eq_ignore_ascii_case(name);
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(query.get(..2)?); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available
    reply.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if answer {
        // Name (pointer to the question), type A, class IN, TTL 60, 4 bytes: 127.0.0.1.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((
        format!("{qname} {}", if qtype == 1 { "A" } else { "other" }),
        reply,
    ))
}

#[test]
fn the_image_resolves_cluster_dns_names_through_resolv_conf() -> Result<()> {
    // As in a pod: a short Service name, a search domain and ndots:5. musl's resolver must
    // ask for `octopus-api.dns-test.svc.cluster.local` without any NSS module.
    let fqdn = "octopus-api.dns-test.svc.cluster.local";
    let dns = DnsServer::start(fqdn)?;
    let files = tempfile::tempdir()?;
    let resolv = files.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.153\nsearch dns-test.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
    )?;
    // The operator's first act is to reach the Kubernetes API named here (port 9: refused).
    let kubeconfig = files.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://octopus-api:9\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  \
         context: {cluster: c, user: u}\ncurrent-context: c\n",
    )?;
    let (resolv, kubeconfig) = (
        resolv.display().to_string(),
        kubeconfig.display().to_string(),
    );
    let bundle = Bundle::new(move |config| {
        with_args(&["run", "--metrics-addr=127.0.0.1:0"])(config);
        // The host's loopback, where the DNS server listens: no network namespace.
        if let Some(namespaces) = config["linux"]["namespaces"].as_array_mut() {
            namespaces.retain(|n| n["type"] != "network");
        }
        let mounts = config["mounts"]
            .as_array_mut()
            .expect("umoci writes mounts");
        for (source, destination) in [(resolv, "/etc/resolv.conf"), (kubeconfig, "/kubeconfig")] {
            mounts.push(json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["bind", "ro"],
            }));
        }
        let env = config["process"]["env"]
            .as_array_mut()
            .expect("umoci writes env");
        env.extend(
            [
                "KUBECONFIG=/kubeconfig",
                "POD_NAME=octopus-operator-0",
                "POD_NAMESPACE=octopus-operator",
            ]
            .map(Value::from),
        );
    })?;
    let mut child = bundle
        .run_command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("runc run")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = format!("{fqdn} A");
    while !dns.asked().contains(&wanted) && Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the operator exited ({status}) before resolving {fqdn}: {:?}",
                child.wait_with_output()?
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = bundle.runc().args(["kill", &bundle.id, "KILL"]).status();
    let output = child.wait_with_output()?;
    let asked = dns.asked();
    println!("the DNS server was asked: {asked:?}");
    assert!(
        asked.contains(&wanted),
        "the operator in the image never asked for {fqdn}: asked {asked:?}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(())
}
