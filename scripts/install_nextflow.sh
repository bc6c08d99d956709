#!/usr/bin/env bash
# Put a working `nextflow` at .venv/bin/nextflow, resolved from Maven Central.
#
# Nextflow's usual installers download from GitHub/nextflow.io; this one only
# needs Maven Central (mvn) and Java >= 17. It writes a tiny pom asking for
# io.nextflow:nextflow:$NXF_INSTALL_VERSION, lets `mvn dependency:copy-dependencies`
# copy the whole runtime tree into .nextflow-dist/<version>/lib, and writes a
# launcher script that runs `java ... nextflow.cli.Launcher` with Nextflow's own
# JVM flags, offline by default (no update check, no plugin downloads) and with
# NXF_HOME in the project (.nextflow-home).
#
# 24.10.0 is the newest release whose whole runtime tree is on Central (from
# 24.10.4 on, nf-httpfs is missing there; 25.x also needs nf-lang and
# io.seqera:lib-trace, which are not). Idempotent: a second run with nothing
# to do takes milliseconds. Users who already have Nextflow just use theirs.
#
# Env: NXF_INSTALL_VERSION (default 24.10.0), JAVA_CMD (default: java on PATH
# or $JAVA_HOME/bin/java), NXF_INSTALL_FORCE=1 to rebuild.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${NXF_INSTALL_VERSION:-24.10.0}"
dist="$root/.nextflow-dist/$version"
launcher="$root/.venv/bin/nextflow"
stamp="launcher-v2 $version $dist"

if [[ -z "${NXF_INSTALL_FORCE:-}" && -f "$dist/lib/.complete" && -x "$launcher" ]] \
   && grep -qxF "# $stamp" "$launcher"; then
  exit 0
fi

java_cmd="${JAVA_CMD:-}"
if [[ -z "$java_cmd" ]]; then
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then java_cmd="$JAVA_HOME/bin/java"; else java_cmd="$(command -v java || true)"; fi
fi
if [[ -z "$java_cmd" ]]; then
  echo "install_nextflow: no java found: install Java 17 or later (e.g. apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
java_major="$("$java_cmd" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1)"
if [[ -z "$java_major" || "$java_major" -lt 17 ]]; then
  echo "install_nextflow: $java_cmd is Java ${java_major:-?}; Nextflow $version here needs Java 17 or later" >&2
  exit 1
fi

if [[ -n "${NXF_INSTALL_FORCE:-}" || ! -f "$dist/lib/.complete" ]]; then
  if ! command -v mvn >/dev/null 2>&1; then
    echo "install_nextflow: mvn (Apache Maven) is needed to fetch Nextflow from Maven Central (apt-get install maven)" >&2
    exit 1
  fi
  echo "install_nextflow: resolving io.nextflow:nextflow:$version and its runtime dependencies from Maven Central" >&2
  rm -rf "$dist"
  mkdir -p "$dist"
  cat > "$dist/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fedsynth</groupId>
  <artifactId>nextflow-dist</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>io.nextflow</groupId>
      <artifactId>nextflow</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
EOF
  if ! (cd "$dist" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
          -DoutputDirectory=lib >"$dist/mvn.log" 2>&1); then
    echo "install_nextflow: mvn could not resolve io.nextflow:nextflow:$version; last lines of $dist/mvn.log:" >&2
    grep -m3 ERROR "$dist/mvn.log" >&2 || tail -n 5 "$dist/mvn.log" >&2
    exit 1
  fi
  ls "$dist/lib"/nextflow-"$version".jar >/dev/null
  touch "$dist/lib/.complete"
fi

mkdir -p "$(dirname "$launcher")"
tmp="$launcher.tmp.$$"
cat > "$tmp" <<EOF
#!/usr/bin/env bash
# Nextflow $version launcher written by scripts/install_nextflow.sh (do not edit).
# $stamp
# Runs Nextflow's Launcher with its own JVM flags, offline by default: set
# NXF_OFFLINE=false etc. to override. NXF_OPTS adds JVM options (e.g. -Xmx2g).
export NXF_HOME="\${NXF_HOME:-$root/.nextflow-home}"
export NXF_OFFLINE="\${NXF_OFFLINE:-true}"
export NXF_DISABLE_CHECK_LATEST="\${NXF_DISABLE_CHECK_LATEST:-true}"
export NXF_PLUGINS_DEFAULT="\${NXF_PLUGINS_DEFAULT:-false}"
export NXF_CLI="\$0 \$*"
export NXF_BIN="\$0"
java="\${JAVA_CMD:-$java_cmd}"
opens=()
for p in java.lang java.io java.nio java.net java.util java.util.concurrent.locks \\
         java.util.concurrent.atomic java.nio.file.spi sun.nio.ch sun.nio.fs \\
         sun.net.www.protocol.http sun.net.www.protocol.https sun.net.www.protocol.ftp \\
         sun.net.www.protocol.file jdk.internal.misc jdk.internal.vm java.util.regex; do
  opens+=("--add-opens=java.base/\$p=ALL-UNNAMED")
done
# TieredStopAtLevel=1: Nextflow's launcher's own choice; it halves start-up time.
exec "\$java" -XX:+TieredCompilation -XX:TieredStopAtLevel=1 \\
  -Dfile.encoding=UTF-8 -Djava.awt.headless=true "\${opens[@]}" \${NXF_OPTS:-} \\
  -cp "$dist/lib/*" nextflow.cli.Launcher "\$@"
EOF
chmod 755 "$tmp"
mv -f "$tmp" "$launcher"
"$launcher" -version >/dev/null 2>&1 || { echo "install_nextflow: $launcher -version failed" >&2; "$launcher" -version; exit 1; }
echo "install_nextflow: Nextflow $version ready at $launcher" >&2
