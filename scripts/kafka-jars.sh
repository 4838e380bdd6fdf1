#!/usr/bin/env bash
# Resolve the jars of an Apache Kafka broker (plus its command-line tools and a logging
# backend) from Maven Central with the machine's Maven, and cache them.
#
#   scripts/kafka-jars.sh VERSION        e.g. 3.9.2 or 4.1.2
#
# Prints the directory holding the jars (use it as `java -cp 'DIR/*'`). The cache lives in
# ${CHANGEFEED_KAFKA_CACHE:-$HOME/.cache/changefeed-kafka}/VERSION/libs; a complete cache
# is reused without starting Maven, so a second call is a fast no-op. Safe to run
# concurrently (an flock serialises the download per version). Needs java and mvn.
set -euo pipefail

version="${1:-}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "usage: $0 VERSION   (an Apache Kafka release such as 3.9.2 or 4.1.2)" >&2
    exit 2
fi

cache="${CHANGEFEED_KAFKA_CACHE:-$HOME/.cache/changefeed-kafka}"
dir="$cache/$version"
libs="$dir/libs"
stamp="$dir/.complete"

if [[ -f "$stamp" ]]; then
    echo "$libs"
    exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
if ! flock -w 900 9; then
    echo "kafka-jars.sh: timed out waiting for another download of Kafka $version" >&2
    exit 1
fi
if [[ -f "$stamp" ]]; then # another process finished it while we waited
    echo "$libs"
    exit 0
fi

command -v mvn >/dev/null || { echo "kafka-jars.sh: mvn (Maven) is not installed" >&2; exit 1; }

major="${version%%.*}"
if (( major >= 4 )); then
    # Kafka 4.x logs through log4j2 (its distribution ships log4j-slf4j-impl + log4j-core).
    logging='
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>'
else
    # Kafka 3.x logs through log4j 1 API, provided by reload4j.
    logging='
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>'
fi

work="$(mktemp -d "$dir/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cat >"$work/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>changefeed.test</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>$logging
  </dependencies>
</project>
POM

echo "kafka-jars.sh: resolving Apache Kafka $version jars with Maven into $libs" >&2
# Maven's own output goes to stderr so that stdout carries only the libs path.
if ! mvn -B -q -Dstyle.color=never -f "$work/pom.xml" \
        org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$work/libs" 1>&2; then
    echo "kafka-jars.sh: Maven could not resolve Apache Kafka $version (is it released on Maven Central?)" >&2
    exit 1
fi
if ! ls "$work/libs"/kafka_2.13-"$version".jar >/dev/null 2>&1; then
    echo "kafka-jars.sh: kafka_2.13-$version.jar missing after resolution" >&2
    exit 1
fi

rm -rf "$libs"
mv "$work/libs" "$libs"
touch "$stamp"
echo "$libs"
