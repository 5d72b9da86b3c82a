"""boto3 against kmsd's TCP listener: every lifecycle operation kmsd
serves (aliases, states, deletion, rotation, tags, descriptions, key
policies, grants), with AWS's answers and AWS's errors."""

import datetime
import json
import os
import shutil
import subprocess
import unittest

from harness import KmsdTestCase


def now():
    return datetime.datetime.now(datetime.timezone.utc)


class Aliases(KmsdTestCase):
    def test_create_list_update_and_delete_an_alias(self):
        a = self.create_key(Description="a")
        b = self.create_key(Description="b")
        self.kms.create_alias(AliasName="alias/app", TargetKeyId=a)
        entries = [
            x
            for x in self.kms.list_aliases(KeyId=a)["Aliases"]
            if x["AliasName"] == "alias/app"
        ]
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(entries[0]["TargetKeyId"], a)
        self.assertEqual(entries[0]["AliasArn"], self.kmsd.alias_arn("alias/app"))
        self.assertIsInstance(entries[0]["CreationDate"], datetime.datetime)
        self.assertEqual(self.kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"], a)

        # The name is taken.
        with self.assertRaises(self.kms.exceptions.AlreadyExistsException) as e:
            self.kms.create_alias(AliasName="alias/app", TargetKeyId=b)
        self.assertError(e, "AlreadyExistsException", 409)

        # UpdateAlias moves it; data keys follow the alias.
        self.kms.update_alias(AliasName="alias/app", TargetKeyId=b)
        self.assertEqual(self.kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"], b)
        enc = self.kms.encrypt(KeyId="alias/app", Plaintext=b"via alias")
        self.assertEqual(enc["KeyId"], self.kmsd.key_arn(b))
        self.assertEqual(
            [x["AliasName"] for x in self.kms.list_aliases(KeyId=b)["Aliases"]], ["alias/app"]
        )
        self.assertEqual(self.kms.list_aliases(KeyId=a)["Aliases"], [])

        self.kms.delete_alias(AliasName="alias/app")
        with self.assertRaises(self.kms.exceptions.NotFoundException):
            self.kms.describe_key(KeyId="alias/app")
        with self.assertRaises(self.kms.exceptions.NotFoundException) as e:
            self.kms.delete_alias(AliasName="alias/app")
        self.assertError(e, "NotFoundException", 404)

    def test_list_aliases_pages(self):
        key = self.create_key()
        names = {f"alias/page-{i}" for i in range(5)}
        for n in names:
            self.kms.create_alias(AliasName=n, TargetKeyId=key)
        pages = list(
            self.kms.get_paginator("list_aliases").paginate(
                KeyId=key, PaginationConfig={"PageSize": 2}
            )
        )
        self.assertEqual([len(p["Aliases"]) for p in pages], [2, 2, 1])
        self.assertEqual({x["AliasName"] for p in pages for x in p["Aliases"]}, names)

    def test_an_alias_name_in_the_aws_namespace_is_refused(self):
        key = self.create_key()
        # AWS reserves alias/aws/ for AWS managed keys ("The alias name
        # cannot begin with alias/aws/", API_CreateAlias). Which error it
        # answers is not documented (emulators answer one or the other).
        with self.assertRaises(self.kms.exceptions.ClientError) as e:
            self.kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key)
        self.assertIn(
            e.exception.response["Error"]["Code"],
            ("InvalidAliasNameException", "NotAuthorizedException"),
            e.exception.response,
        )
        self.assertEqual(self.kms.list_aliases(KeyId=key)["Aliases"], [])


class States(KmsdTestCase):
    def test_disable_and_enable(self):
        key = self.create_key()
        blob = self.kms.encrypt(KeyId=key, Plaintext=b"before")["CiphertextBlob"]
        self.kms.disable_key(KeyId=key)
        meta = self.kms.describe_key(KeyId=key)["KeyMetadata"]
        self.assertEqual((meta["KeyState"], meta["Enabled"]), ("Disabled", False))
        for call in (
            lambda: self.kms.encrypt(KeyId=key, Plaintext=b"x"),
            lambda: self.kms.decrypt(CiphertextBlob=blob),
            lambda: self.kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
            lambda: self.kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256"),
            lambda: self.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key),
        ):
            with self.assertRaises(self.kms.exceptions.DisabledException) as e:
                call()
            self.assertError(e, "DisabledException", 409)
        # Disabling twice is fine, as on AWS.
        self.kms.disable_key(KeyId=key)
        self.kms.enable_key(KeyId=key)
        meta = self.kms.describe_key(KeyId=key)["KeyMetadata"]
        self.assertEqual((meta["KeyState"], meta["Enabled"]), ("Enabled", True))
        self.assertEqual(self.kms.decrypt(CiphertextBlob=blob)["Plaintext"], b"before")

    def test_schedule_and_cancel_deletion(self):
        key = self.create_key()
        blob = self.kms.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
        scheduled = self.kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
        self.assertEqual(scheduled["KeyId"], self.kmsd.key_arn(key))
        self.assertEqual(scheduled["KeyState"], "PendingDeletion")
        self.assertEqual(scheduled["PendingWindowInDays"], 7)
        in_a_week = now() + datetime.timedelta(days=7)
        self.assertLess(abs(scheduled["DeletionDate"] - in_a_week), datetime.timedelta(days=1))
        meta = self.kms.describe_key(KeyId=key)["KeyMetadata"]
        self.assertEqual(meta["KeyState"], "PendingDeletion")
        self.assertIs(meta["Enabled"], False)
        self.assertEqual(meta["DeletionDate"], scheduled["DeletionDate"])

        # A key pending deletion: not usable, not enabled, not re-scheduled.
        for call in (
            lambda: self.kms.encrypt(KeyId=key, Plaintext=b"x"),
            lambda: self.kms.decrypt(CiphertextBlob=blob),
            lambda: self.kms.enable_key(KeyId=key),
            lambda: self.kms.disable_key(KeyId=key),
            lambda: self.kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7),
            lambda: self.kms.update_key_description(KeyId=key, Description="no"),
        ):
            with self.assertRaises(self.kms.exceptions.KMSInvalidStateException) as e:
                call()
            self.assertError(e, "KMSInvalidStateException", 409)

        cancelled = self.kms.cancel_key_deletion(KeyId=key)
        self.assertEqual(cancelled["KeyId"], self.kmsd.key_arn(key))
        # CancelKeyDeletion leaves the key Disabled, as AWS does.
        meta = self.kms.describe_key(KeyId=key)["KeyMetadata"]
        self.assertEqual(meta["KeyState"], "Disabled")
        self.assertNotIn("DeletionDate", meta)
        with self.assertRaises(self.kms.exceptions.KMSInvalidStateException) as e:
            self.kms.cancel_key_deletion(KeyId=key)
        self.assertError(e, "KMSInvalidStateException", 409)
        self.kms.enable_key(KeyId=key)
        self.assertEqual(self.kms.decrypt(CiphertextBlob=blob)["Plaintext"], b"kept")

    def test_the_deletion_window_is_7_to_30_days(self):
        key = self.create_key()
        for days in (6, 31):
            with self.subTest(days=days):
                with self.assertRaises(self.kms.exceptions.ClientError) as e:
                    self.kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=days)
                self.assertError(e, "ValidationException", 400)
        # The default window is 30 days.
        scheduled = self.kms.schedule_key_deletion(KeyId=key)
        self.assertEqual(scheduled["PendingWindowInDays"], 30)


class Rotation(KmsdTestCase):
    def test_automatic_rotation_status(self):
        key = self.create_key()
        status = self.kms.get_key_rotation_status(KeyId=key)
        self.assertIs(status["KeyRotationEnabled"], False)
        self.assertEqual(status.get("KeyId"), self.kmsd.key_arn(key), status)

        self.kms.enable_key_rotation(KeyId=key)
        status = self.kms.get_key_rotation_status(KeyId=key)
        self.assertIs(status["KeyRotationEnabled"], True)
        self.assertEqual(status["RotationPeriodInDays"], 365)
        in_a_year = now() + datetime.timedelta(days=365)
        self.assertLess(abs(status["NextRotationDate"] - in_a_year), datetime.timedelta(days=1))

        self.kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
        status = self.kms.get_key_rotation_status(KeyId=key)
        self.assertEqual(status["RotationPeriodInDays"], 90)

        self.kms.disable_key_rotation(KeyId=key)
        status = self.kms.get_key_rotation_status(KeyId=key)
        self.assertIs(status["KeyRotationEnabled"], False)

        # Out of AWS's 90..2560 days.
        with self.assertRaises(self.kms.exceptions.ClientError) as e:
            self.kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=2561)
        self.assertError(e, "ValidationException", 400)
        # A disabled key's rotation cannot be changed.
        self.kms.disable_key(KeyId=key)
        with self.assertRaises(self.kms.exceptions.DisabledException) as e:
            self.kms.enable_key_rotation(KeyId=key)
        self.assertError(e, "DisabledException", 409)

    def test_on_demand_rotation_and_list_key_rotations(self):
        key = self.create_key()
        self.assertEqual(self.kms.list_key_rotations(KeyId=key)["Rotations"], [])
        old = self.kms.encrypt(KeyId=key, Plaintext=b"old material")["CiphertextBlob"]

        rotated = self.kms.rotate_key_on_demand(KeyId=key)
        self.assertEqual(rotated["KeyId"], self.kmsd.key_arn(key))
        self.kms.rotate_key_on_demand(KeyId=key)

        rotations = self.kms.list_key_rotations(KeyId=key)
        self.assertIs(rotations["Truncated"], False)
        self.assertEqual(len(rotations["Rotations"]), 2, rotations)
        for r in rotations["Rotations"]:
            self.assertEqual(r["KeyId"], self.kmsd.key_arn(key))
            self.assertEqual(r["RotationType"], "ON_DEMAND")
            self.assertLess(abs(r["RotationDate"] - now()), datetime.timedelta(minutes=5))

        # Paged by hand and by the paginator.
        first = self.kms.list_key_rotations(KeyId=key, Limit=1)
        self.assertIs(first["Truncated"], True)
        second = self.kms.list_key_rotations(KeyId=key, Limit=1, Marker=first["NextMarker"])
        self.assertIs(second["Truncated"], False)
        self.assertEqual(first["Rotations"] + second["Rotations"], rotations["Rotations"])
        pages = list(
            self.kms.get_paginator("list_key_rotations").paginate(
                KeyId=key, PaginationConfig={"PageSize": 1}
            )
        )
        self.assertEqual([len(p["Rotations"]) for p in pages], [1, 1])

        # Old ciphertexts still decrypt; new ones use the new material.
        self.assertEqual(self.kms.decrypt(CiphertextBlob=old)["Plaintext"], b"old material")
        new = self.kms.encrypt(KeyId=key, Plaintext=b"new material")["CiphertextBlob"]
        self.assertEqual(self.kms.decrypt(CiphertextBlob=new)["Plaintext"], b"new material")


class TagsAndDescription(KmsdTestCase):
    def test_tag_list_and_untag(self):
        key = self.create_key(Tags=[{"TagKey": "a", "TagValue": "1"}])
        self.kms.tag_resource(
            KeyId=key,
            Tags=[{"TagKey": "b", "TagValue": "2"}, {"TagKey": "a", "TagValue": "one"}],
        )
        listed = self.kms.list_resource_tags(KeyId=key)
        self.assertIs(listed["Truncated"], False)
        self.assertEqual(
            sorted((t["TagKey"], t["TagValue"]) for t in listed["Tags"]),
            [("a", "one"), ("b", "2")],
        )
        self.kms.untag_resource(KeyId=key, TagKeys=["a", "not-there"])
        self.assertEqual(
            self.kms.list_resource_tags(KeyId=key)["Tags"], [{"TagKey": "b", "TagValue": "2"}]
        )

    def test_update_key_description(self):
        key = self.create_key(Description="first")
        self.kms.update_key_description(KeyId=key, Description="second")
        self.assertEqual(
            self.kms.describe_key(KeyId=key)["KeyMetadata"]["Description"], "second"
        )
        self.kms.update_key_description(KeyId=key, Description="")
        self.assertEqual(self.kms.describe_key(KeyId=key)["KeyMetadata"]["Description"], "")


class KeyPolicies(KmsdTestCase):
    def test_get_put_and_list_key_policies(self):
        key = self.create_key()
        self.assertEqual(self.kms.list_key_policies(KeyId=key)["PolicyNames"], ["default"])
        policy = json.loads(self.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
        self.assertIn("Statement", policy)

        # Before: the other principal may not use the key.
        other = self.kmsd.client(self.kmsd.other)
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.encrypt(KeyId=key, Plaintext=b"x")
        self.assertError(e, "AccessDeniedException", 400)

        statements = policy["Statement"]
        if isinstance(statements, dict):
            statements = [statements]
        statements.append(
            {
                "Sid": "the other principal encrypts",
                "Effect": "Allow",
                "Principal": {"AWS": self.kmsd.other.principal},
                "Action": "kms:Encrypt",
                "Resource": "*",
            }
        )
        policy["Statement"] = statements
        text = json.dumps(policy, indent=2)
        self.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=text)
        self.assertEqual(
            self.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"], text
        )
        # After: it may encrypt, and only that.
        other.encrypt(KeyId=key, Plaintext=b"x")
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.generate_data_key(KeyId=key, KeySpec="AES_256")
        self.assertError(e, "AccessDeniedException", 400)

    def test_a_malformed_policy_is_refused(self):
        key = self.create_key()
        with self.assertRaises(self.kms.exceptions.MalformedPolicyDocumentException) as e:
            self.kms.put_key_policy(KeyId=key, PolicyName="default", Policy='{"Statement": 1}')
        self.assertError(e, "MalformedPolicyDocumentException", 400)


class Grants(KmsdTestCase):
    def test_create_list_retire_and_revoke_grants(self):
        key = self.create_key()
        other = self.kmsd.client(self.kmsd.other)
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.encrypt(KeyId=key, Plaintext=b"x")
        self.assertError(e, "AccessDeniedException", 400)

        grant = self.kms.create_grant(
            KeyId=key,
            GranteePrincipal=self.kmsd.other.principal,
            Operations=["Encrypt", "Decrypt", "RetireGrant"],
            Constraints={"EncryptionContextSubset": {"app": "granted"}},
            Name="for-the-other",
        )
        self.assertEqual(len(grant["GrantId"]), 64)
        self.assertTrue(grant["GrantToken"])
        # Same name and parameters: the same grant (AWS's idempotency).
        again = self.kms.create_grant(
            KeyId=key,
            GranteePrincipal=self.kmsd.other.principal,
            Operations=["Encrypt", "Decrypt", "RetireGrant"],
            Constraints={"EncryptionContextSubset": {"app": "granted"}},
            Name="for-the-other",
        )
        self.assertEqual(again["GrantId"], grant["GrantId"])

        listed = self.kms.list_grants(KeyId=key)
        self.assertIs(listed["Truncated"], False)
        self.assertEqual(len(listed["Grants"]), 1, listed)
        g = listed["Grants"][0]
        self.assertEqual(g["GrantId"], grant["GrantId"])
        self.assertEqual(g["KeyId"], self.kmsd.key_arn(key))
        self.assertEqual(g["GranteePrincipal"], self.kmsd.other.principal)
        self.assertEqual(g["Name"], "for-the-other")
        self.assertEqual(sorted(g["Operations"]), ["Decrypt", "Encrypt", "RetireGrant"])
        self.assertEqual(g["Constraints"], {"EncryptionContextSubset": {"app": "granted"}})
        self.assertIsInstance(g["CreationDate"], datetime.datetime)

        # The grantee, through its own access key, within the constraint.
        blob = other.encrypt(
            KeyId=key, Plaintext=b"granted", EncryptionContext={"app": "granted", "x": "y"}
        )["CiphertextBlob"]
        self.assertEqual(
            other.decrypt(
                CiphertextBlob=blob, EncryptionContext={"app": "granted", "x": "y"}
            )["Plaintext"],
            b"granted",
        )
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "other"})
        self.assertError(e, "AccessDeniedException", 400)

        # The grantee retires it (the grant allows RetireGrant); it is gone
        # for the very next request.
        other.retire_grant(KeyId=key, GrantId=grant["GrantId"])
        self.assertEqual(self.kms.list_grants(KeyId=key)["Grants"], [])
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "granted"})
        self.assertError(e, "AccessDeniedException", 400)

        # Retire by token, by the retiring principal.
        by_token = self.kms.create_grant(
            KeyId=key,
            GranteePrincipal=self.kmsd.other.principal,
            Operations=["Encrypt"],
            RetiringPrincipal=self.kmsd.admin.principal,
        )
        self.assertEqual(
            [
                x["GrantId"]
                for x in self.kms.list_retirable_grants(
                    RetiringPrincipal=self.kmsd.admin.principal
                )["Grants"]
            ],
            [by_token["GrantId"]],
        )
        self.kms.retire_grant(GrantToken=by_token["GrantToken"])
        self.assertEqual(self.kms.list_grants(KeyId=key)["Grants"], [])

        # Revoked by the key's administrator.
        revoked = self.kms.create_grant(
            KeyId=key, GranteePrincipal=self.kmsd.other.principal, Operations=["Encrypt"]
        )
        other.encrypt(KeyId=key, Plaintext=b"x")
        self.kms.revoke_grant(KeyId=key, GrantId=revoked["GrantId"])
        self.assertEqual(self.kms.list_grants(KeyId=key)["Grants"], [])
        with self.assertRaises(other.exceptions.ClientError) as e:
            other.encrypt(KeyId=key, Plaintext=b"x")
        self.assertError(e, "AccessDeniedException", 400)
        with self.assertRaises(self.kms.exceptions.NotFoundException) as e:
            self.kms.revoke_grant(KeyId=key, GrantId=revoked["GrantId"])
        self.assertError(e, "NotFoundException", 404)

    def test_list_grants_pages(self):
        key = self.create_key()
        ids = {
            self.kms.create_grant(
                KeyId=key, GranteePrincipal=f"uid:{70000 + i}", Operations=["Encrypt"]
            )["GrantId"]
            for i in range(3)
        }
        pages = list(
            self.kms.get_paginator("list_grants").paginate(
                KeyId=key, PaginationConfig={"PageSize": 2}
            )
        )
        self.assertEqual([len(p["Grants"]) for p in pages], [2, 1])
        self.assertEqual({g["GrantId"] for p in pages for g in p["Grants"]}, ids)

    def test_a_disabled_key_takes_no_grant(self):
        key = self.create_key()
        self.kms.disable_key(KeyId=key)
        with self.assertRaises(self.kms.exceptions.DisabledException) as e:
            self.kms.create_grant(
                KeyId=key, GranteePrincipal=self.kmsd.other.principal, Operations=["Encrypt"]
            )
        self.assertError(e, "DisabledException", 409)


class ImportedKeyMaterial(KmsdTestCase):
    """BYOK as AWS's docs do it: the material wrapped with the openssl
    command line (scripts/install-deps.sh installs it) under the public key
    GetParametersForImport answers, RSAES_OAEP_SHA_256."""

    def wrap(self, public_key_der, material):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("no openssl command (scripts/install-deps.sh)")
        public_key = self.kmsd.dir / "wrapping-key.der"
        public_key.write_bytes(public_key_der)
        plain = self.kmsd.dir / "material.bin"
        plain.write_bytes(material)
        wrapped = self.kmsd.dir / "material.wrapped"
        subprocess.run(
            [
                "openssl", "pkeyutl", "-encrypt", "-pubin",
                "-keyform", "DER", "-inkey", str(public_key),
                "-in", str(plain), "-out", str(wrapped),
                "-pkeyopt", "rsa_padding_mode:oaep",
                "-pkeyopt", "rsa_oaep_md:sha256",
                "-pkeyopt", "rsa_mgf1_md:sha256",
            ],
            check=True,
            capture_output=True,
        )
        plain.unlink()
        return wrapped.read_bytes()

    def import_material(self, key, material):
        params = self.kms.get_parameters_for_import(
            KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        self.kms.import_key_material(
            KeyId=key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=self.wrap(params["PublicKey"], material),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )
        return params

    def test_import_use_delete_and_import_again(self):
        meta = self.kms.create_key(Origin="EXTERNAL", Description="byok")["KeyMetadata"]
        key = meta["KeyId"]
        self.assertEqual((meta["Origin"], meta["KeyState"]), ("EXTERNAL", "PendingImport"))
        with self.assertRaises(self.kms.exceptions.KMSInvalidStateException) as e:
            self.kms.encrypt(KeyId=key, Plaintext=b"x")
        self.assertError(e, "KMSInvalidStateException", 409)

        material = os.urandom(32)
        params = self.import_material(key, material)
        self.assertEqual(params["KeyId"], self.kmsd.key_arn(key))
        in_a_day = now() + datetime.timedelta(hours=24)
        self.assertLess(abs(params["ParametersValidTo"] - in_a_day), datetime.timedelta(hours=1))
        meta = self.kms.describe_key(KeyId=key)["KeyMetadata"]
        self.assertEqual(meta["KeyState"], "Enabled")
        self.assertEqual(meta["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE")
        blob = self.kms.encrypt(KeyId=key, Plaintext=b"under my material")["CiphertextBlob"]

        # A token is used once.
        with self.assertRaises(self.kms.exceptions.InvalidImportTokenException) as e:
            self.kms.import_key_material(
                KeyId=key,
                ImportToken=params["ImportToken"],
                EncryptedKeyMaterial=self.wrap(params["PublicKey"], material),
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            )
        self.assertError(e, "InvalidImportTokenException", 400)

        self.kms.delete_imported_key_material(KeyId=key)
        self.assertEqual(
            self.kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"], "PendingImport"
        )
        with self.assertRaises(self.kms.exceptions.KMSInvalidStateException):
            self.kms.decrypt(CiphertextBlob=blob)

        # Only the same material comes back, and with it the ciphertexts.
        with self.assertRaises(self.kms.exceptions.IncorrectKeyMaterialException) as e:
            self.import_material(key, os.urandom(32))
        self.assertError(e, "IncorrectKeyMaterialException", 400)
        self.import_material(key, material)
        self.assertEqual(self.kms.decrypt(CiphertextBlob=blob)["Plaintext"], b"under my material")

    def test_a_key_of_kmsd_material_takes_no_import(self):
        key = self.create_key()
        with self.assertRaises(self.kms.exceptions.UnsupportedOperationException) as e:
            self.kms.get_parameters_for_import(
                KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
            )
        self.assertError(e, "UnsupportedOperationException", 400)
