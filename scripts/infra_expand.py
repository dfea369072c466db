"""Writes the SAM template with every local AWS::Include inlined, as JSON.

CloudFormation inlines `Fn::Transform: {Name: AWS::Include, Parameters:
{Location: s3://...}}` before the SAM transform runs; offline, `sam validate`
(the SAM translator) and cfn-lint only see the include directive, so they
cannot check the OpenAPI body: that the integrations and the authorizer name
functions that exist, or that SAM accepts the API properties together with
that body. scripts/infra-check.sh runs both again on this expanded copy.

Usage (run with the .venv-sam python: it parses with cfn-lint's YAML
loader, which knows !Sub and friends):
  infra_expand.py TEMPLATE OUT.json   write the expanded template
  infra_expand.py --functions TEMPLATE
      print "<logical id> <binary> <CodeUri>" for every Lambda function built
      by cargo-lambda, for the check that the template covers every crate.
"""

import json
import os
import sys

from cfnlint.decode import cfn_yaml


def inline(node, base_dir, found):
    if isinstance(node, dict):
        transform = node.get("Fn::Transform")
        if len(node) == 1 and isinstance(transform, dict) and transform.get("Name") == "AWS::Include":
            location = transform.get("Parameters", {}).get("Location")
            if not isinstance(location, str) or location.startswith(("s3://", "https://")):
                sys.exit(f"AWS::Include with a non-local Location: {location!r}")
            path = os.path.join(base_dir, location)
            if not os.path.isfile(path):
                sys.exit(f"AWS::Include Location {location!r} does not exist ({path})")
            found.append(path)
            return inline(cfn_yaml.load(path), os.path.dirname(path), found)
        return {key: inline(value, base_dir, found) for key, value in node.items()}
    if isinstance(node, list):
        return [inline(value, base_dir, found) for value in node]
    return node


def functions(template):
    resources = cfn_yaml.load(template).get("Resources", {})
    for logical_id, resource in sorted(resources.items()):
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        metadata = resource.get("Metadata", {})
        if metadata.get("BuildMethod") != "rust-cargolambda":
            sys.exit(f"{logical_id}: BuildMethod is not rust-cargolambda")
        binary = metadata.get("BuildProperties", {}).get("Binary")
        code_uri = resource.get("Properties", {}).get("CodeUri")
        if not isinstance(binary, str) or not isinstance(code_uri, str):
            sys.exit(f"{logical_id}: needs Metadata.BuildProperties.Binary and a local CodeUri")
        print(logical_id, binary, code_uri)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--functions":
        functions(sys.argv[2])
        return
    if len(sys.argv) != 3:
        sys.exit("usage: infra_expand.py TEMPLATE OUT.json | --functions TEMPLATE")
    template = os.path.abspath(sys.argv[1])
    found = []
    expanded = inline(cfn_yaml.load(template), os.path.dirname(template), found)
    if not found:
        sys.exit("no local AWS::Include in the template: nothing to check")
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        json.dump(expanded, out, indent=1)
    for path in found:
        print(f"inlined {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
