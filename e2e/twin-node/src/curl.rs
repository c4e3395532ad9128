//! `curl` in the node image: what the operator's liveness and startup probes run
//! (`curl --silent --max-time 4 --output /dev/null --write-out '%{http_code}' URL`), as
//! Octopus's own image has curl. A GET of one http URL; `--write-out` knows `%{http_code}`
//! (000 when nothing answered). Exit codes as curl's: 0 on any HTTP answer, 3 for a bad
//! URL, 7 when the connection fails, 28 on timeout, 2 for an option it does not know.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

struct Options {
    url: String,
    max_time: Option<Duration>,
    output: Option<String>,
    write_out: Option<String>,
    silent: bool,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        url: String::new(),
        max_time: None,
        output: None,
        write_out: None,
        silent: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or(format!("option {name}: requires parameter"))
        };
        match arg.as_str() {
            "-s" | "--silent" => options.silent = true,
            "-m" | "--max-time" => {
                let seconds: f64 = value(&arg)?
                    .parse()
                    .map_err(|_| format!("option {arg}: expected a number"))?;
                options.max_time = Some(Duration::from_secs_f64(seconds.max(0.0)));
            }
            "-o" | "--output" => options.output = Some(value(&arg)?),
            "-w" | "--write-out" => options.write_out = Some(value(&arg)?),
            flag if flag.starts_with('-') => {
                return Err(format!("option {flag}: not supported by this curl"));
            }
            url => options.url = url.to_string(),
        }
    }
    if options.url.is_empty() {
        return Err("no URL specified".into());
    }
    Ok(options)
}

pub async fn main(args: Vec<String>) -> ExitCode {
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("curl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut client = reqwest::Client::builder();
    if let Some(max_time) = options.max_time {
        client = client.timeout(max_time);
    }
    let (code, exit) = match client.build() {
        Err(e) => {
            report(&options, &format!("{e}"));
            (0, 2)
        }
        Ok(client) => match client.get(&options.url).send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                if let Err(e) = write_body(options.output.as_deref(), &body) {
                    report(&options, &e.to_string());
                    (code, 23)
                } else {
                    (code, 0)
                }
            }
            Err(e) => {
                report(&options, &e.to_string());
                let exit = if e.is_timeout() {
                    28
                } else if e.is_builder() {
                    3
                } else {
                    7
                };
                (0, exit)
            }
        },
    };
    if let Some(format) = &options.write_out {
        print!("{}", format.replace("%{http_code}", &format!("{code:03}")));
        let _ = std::io::stdout().flush();
    }
    ExitCode::from(exit)
}

fn report(options: &Options, error: &str) {
    if !options.silent {
        eprintln!("curl: {error}");
    }
}

fn write_body(output: Option<&str>, body: &[u8]) -> std::io::Result<()> {
    match output {
        Some(path) => std::fs::write(path, body),
        None => std::io::stdout().write_all(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_probes_flags_and_refuses_others() {
        let args = "--silent --max-time 4 --output /dev/null --write-out %{http_code} http://localhost:8080/api/octopusservernodes/ping";
        let options = parse(args.split(' ').map(String::from).collect());
        let options = options.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(options.max_time, Some(Duration::from_secs(4)));
        assert_eq!(options.output.as_deref(), Some("/dev/null"));
        assert_eq!(options.write_out.as_deref(), Some("%{http_code}"));
        assert!(options.url.ends_with("/ping"));
        assert!(parse(vec!["--fail".into(), "http://x".into()]).is_err());
    }
}
